"""builder-trace: run one input through a trained model and print every node's output, in graph order.

    builder-trace ckpt=RUN_DIR input=[32,107,56,11.2]
    builder-trace ckpt=RUN_DIR prompt="To be, or not" node="layers.0.*"
    builder-trace ckpt=RUN_DIR text="four hundred seventy-two" format=json > trace.json

Small tensors are printed whole; larger ones as mean, std, min and max. node= filters by name (a glob).
"""
from __future__ import annotations

import json

from builder.cli import command
from builder.cli.args import parse_args
from builder.cli.example import example, split_verbatim
from builder.errors import ConfigError
from builder.graph.trace import format_steps, trace
from builder.serve.api import load
from builder.settings import S

SPEC = {"ckpt": S("Any", doc="a run directory, .ckpt file or export directory"),
        "input": S("list | None", None, "a classifier's raw values"), "node": S("str | None", None, "a glob"),
        "format": S("Literal['text', 'json']", "text"), "digits": S("int", 4, low=1, high=17),
        "allow_imports": S("bool", False)}


def main(argv: list[str] | None = None) -> None:
    command("builder-trace", __doc__, _main, argv, SPEC)


def _main(argv: list[str]) -> None:
    raw, rest = split_verbatim(argv)
    args = parse_args(rest, SPEC)
    if args["format"] not in ("text", "json"):
        raise ConfigError(f"format: '{args['format']}' is not text or json")
    model = load(str(args["ckpt"]), allow_imports=bool(args["allow_imports"]))
    ex = example(model, raw, args["input"])
    try:
        steps = trace(model.model, **ex.inputs, only=args["node"])
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"input: the model cannot run on it: {str(e).splitlines()[0]}") from None
    if args["node"] and not steps:
        raise ConfigError(f"node: no node matches '{args['node']}'")
    if args["format"] == "json":
        print(json.dumps([s.as_dict() for s in steps], indent=1))
    else:
        print(format_steps(steps, int(args["digits"])))


if __name__ == "__main__":
    main()
