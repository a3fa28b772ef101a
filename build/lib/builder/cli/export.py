"""builder-export: write a trained model as model.safetensors + config.yaml (+ tokenizer.json).

    builder-export ckpt=RUN_DIR out=DIR

Every command (and builder.load) accepts the result as ckpt=DIR.
"""
from __future__ import annotations

from builder.cli import command
from builder.cli.args import REQUIRED, parse_args

SPEC = {"ckpt": REQUIRED, "out": REQUIRED, "allow_imports": False}


def main(argv: list[str] | None = None) -> None:
    command("builder-export", __doc__, _main, argv)


def _main(argv: list[str]) -> None:
    args = parse_args(argv, SPEC)
    from builder.serve.api import load
    model = load(str(args["ckpt"]), allow_imports=bool(args["allow_imports"]))
    out = model.export(str(args["out"]))
    files = sorted(p.name for p in out.iterdir())
    print(f"exported {model.path} to {out}: {', '.join(files)}")


if __name__ == "__main__":
    main()
