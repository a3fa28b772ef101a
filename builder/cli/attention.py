"""builder-attention: the attention weights of every layer and head for one prompt, drawn.

    builder-attention ckpt=RUN_DIR prompt="To be, or not to be" out=outputs/attention
    builder-attention ckpt=RUN_DIR text="four hundred seventy-two" head=0 layer=decoder.1.cross

Writes one PNG per attention node (a grid of heads, tokens on both axes) under out=, and prints the prompt
with each token coloured by the attention the last token pays it (the last attention node, or layer=),
averaged over heads or for one head=.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

from builder.cli import command
from builder.cli.args import parse_args
from builder.cli.example import example, split_verbatim
from builder.errors import ConfigError, suggest
from builder.graph.attention import capture_attention, coloured, last_token_attention, save_heatmaps, token_axes
from builder.serve.api import load
from builder.settings import S

SPEC = {"ckpt": S("Any", doc="a run directory, .ckpt file or export directory"),
        "out": S("str | None", None, "where the PNGs go (default outputs/attention)"),
        "head": S("int | None", None, low=0), "layer": S("str | None", None, "an attention node"),
        "allow_imports": S("bool", False)}
DEFAULT_OUT = Path("outputs") / "attention"


def main(argv: list[str] | None = None) -> None:
    command("builder-attention", __doc__, _main, argv, SPEC)


def _main(argv: list[str]) -> None:
    raw, rest = split_verbatim(argv)
    args = parse_args(rest, SPEC)
    model = load(str(args["ckpt"]), allow_imports=bool(args["allow_imports"]))
    if model.task not in ("language_model", "seq2seq"):
        raise ConfigError(f"ckpt: builder-attention needs a GPT or translation model; this one's task is '{model.task}'")
    ex = example(model, raw, None)
    maps = capture_attention(model.model, lambda: model.model(**ex.inputs))
    if not maps:
        raise ConfigError("ckpt: this model has no attention blocks")
    layer = args["layer"] or list(maps)[-1]
    if layer not in maps:
        raise ConfigError(f"layer: no attention node '{layer}'{suggest(layer, maps)}; nodes: {', '.join(maps)}")
    head = args["head"]
    heads = maps[layer].shape[1]
    if head is not None and not 0 <= int(head) < heads:
        raise ConfigError(f"head: {head} is out of range; layer {layer} has heads 0..{heads - 1}")
    out = Path(args["out"] or DEFAULT_OUT)
    axes = {name: token_axes(model.model.spec, name, ex.tokens) for name in maps}
    written = []
    for name, w in maps.items():
        queries, keys = axes[name]
        written += save_heatmaps({name: w}, queries, keys, out)
    queries, keys = axes[layer]
    console = Console()
    console.print(f"attention of the last token ({queries[-1]!r}) in {layer}, "
                  + ("mean over heads" if head is None else f"head {head}") + ":")
    console.print(coloured(keys, last_token_attention(maps[layer], None if head is None else int(head))))
    print(f"{len(written)} heatmaps written to {out}/" + ("" if args["out"] else "  (choose with out=DIR)"))


if __name__ == "__main__":
    main()
