"""builder-export: write a trained model as model.safetensors + config.yaml (+ tokenizer.json), or as a Hugging
Face directory.

    builder-export ckpt=RUN_DIR out=DIR                # ours: every command (and builder.load) reads it as ckpt=DIR
    builder-export ckpt=RUN_DIR format=hf out=DIR      # config.json, model.safetensors, tokenizer.json: transformers'
                                                       # AutoModelForCausalLM.from_pretrained(DIR) loads it

format=hf takes GPT-2 and Llama-family models (conf/model/gpt.yaml, conf/model/llama.yaml; the families and their
names are the tables in conf/hf/).
"""
from __future__ import annotations

from builder.cli import command
from builder.cli.args import REQUIRED, parse_args
from builder.errors import ConfigError

SPEC = {"ckpt": REQUIRED, "out": REQUIRED, "format": "builder", "allow_imports": False}
FORMATS = ("builder", "hf")


def main(argv: list[str] | None = None) -> None:
    command("builder-export", __doc__, _main, argv)


def _main(argv: list[str]) -> None:
    args = parse_args(argv, SPEC)
    if args["format"] not in FORMATS:
        raise ConfigError(f"format: expected one of {', '.join(FORMATS)}, got {args['format']!r}")
    from builder.serve.api import load
    model = load(str(args["ckpt"]), allow_imports=bool(args["allow_imports"]))
    if args["format"] == "hf":
        from builder.serve import checkpoint, hf
        out = hf.export(checkpoint.Loaded(model.model, model.config, model.path, model.tokenizer_json), str(args["out"]))
    else:
        out = model.export(str(args["out"]))
    files = sorted(p.name for p in out.iterdir())
    print(f"exported {model.path} to {out}: {', '.join(files)}")


if __name__ == "__main__":
    main()
