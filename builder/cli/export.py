"""builder-export: write a trained model as model.safetensors + config.yaml (+ tokenizer.json).

    builder-export ckpt=RUN_DIR out=DIR

Every command (and builder.load) accepts the result as ckpt=DIR.
"""
from __future__ import annotations

import sys

from builder.cli.args import REQUIRED, parse_args
from builder.errors import friendly_errors

SPEC = {"ckpt": REQUIRED, "out": REQUIRED, "allow_imports": False}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    with friendly_errors("builder-export"):
        args = parse_args(argv, SPEC)
        from builder.api import load
        model = load(str(args["ckpt"]), allow_imports=bool(args["allow_imports"]))
        out = model.export(str(args["out"]))
        files = sorted(p.name for p in out.iterdir())
        print(f"exported {model.path} to {out}: {', '.join(files)}")


if __name__ == "__main__":
    main()
