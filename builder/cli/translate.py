"""builder-translate: translate text with a trained seq2seq model.

    builder-translate ckpt=RUN_DIR text="three hundred twenty-one"
    builder-translate ckpt=RUN_DIR num_beams=4 < sentences.txt      # one output line per input line

Greedy decoding by default; num_beams > 1 runs beam search, whose scores are divided by
length ** length_penalty. Lines are translated in batches of batch_size, sorted by length.
ckpt= is a run directory (its best checkpoint), a .ckpt file or an export directory.
"""
from __future__ import annotations

import sys

from builder.cli import command
from builder.cli.args import parse_args
from builder.errors import ConfigError
from builder.serve.checkpoint import load
from builder.settings import S

SPEC = {"ckpt": S("Any", doc="a run directory, .ckpt file or export directory"),
        "text": S("str | None", None, "without it, one sentence per line on standard input"),
        "num_beams": S("int", 1, "> 1: beam search", low=1), "length_penalty": S("float", 1.0),
        "batch_size": S("int", 64, low=1), "allow_imports": S("bool", False)}
USAGE = ("usage: builder-translate ckpt=RUN_DIR|FILE.ckpt|EXPORT_DIR [text=\"...\"] [num_beams=N] "
         "[length_penalty=X] [batch_size=N]   (without text=, one sentence per line on standard input)")


def main(argv: list[str] | None = None) -> None:
    command("builder-translate", __doc__, _main, argv, SPEC)


def _main(argv: list[str]) -> None:
    args = parse_args(argv, SPEC, usage=USAGE)
    if int(args["num_beams"]) < 1 or int(args["batch_size"]) < 1:
        raise ConfigError("num_beams and batch_size must be at least 1")
    loaded = load(str(args["ckpt"]), allow_imports=bool(args["allow_imports"]))
    if loaded.config["task"]["name"] != "seq2seq":
        raise ConfigError(f"ckpt: builder-translate needs a seq2seq model; this one's task is "
                          f"'{loaded.config['task']['name']}'")
    from builder.serve.translation import Translator  # deferred: config errors are reported before torch is imported
    model = Translator(loaded)
    lines = [str(args["text"])] if args["text"] is not None else sys.stdin.read().splitlines()
    try:
        out = model.translate(lines, num_beams=int(args["num_beams"]),
                              length_penalty=float(args["length_penalty"]), batch_size=int(args["batch_size"]))
    except ValueError as e:  # e.g. a character the source tokenizer has never seen
        raise ConfigError(f"text: cannot translate: {e}") from None
    for line in out:
        print(line, flush=False)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
