"""builder-export: write a trained model for where it will run.

    builder-export ckpt=RUN_DIR out=DIR                  # ours: model.safetensors + config.yaml (+ tokenizer.json);
                                                         # every command (and builder.load) reads it as ckpt=DIR
    builder-export ckpt=RUN_DIR format=hf out=DIR        # config.json, model.safetensors, tokenizer.json: transformers'
                                                         # AutoModelForCausalLM.from_pretrained(DIR) loads it
    builder-export ckpt=RUN_DIR format=onnx out=DIR      # model.onnx (+ config.yaml, tokenizer.json) for onnxruntime
    builder-export ckpt=RUN_DIR format=gguf out=DIR dtype=float16   # model.gguf for llama.cpp

format=hf and format=gguf take GPT-2 and Llama-family models (conf/model/gpt.yaml, conf/model/llama.yaml; the
families are the tables in conf/hf/); format=onnx takes any graph: one ONNX graph with all the model's inputs
and outputs under their config names, the named dimensions (batch, seq, src_len, ...) dynamic. LoRA adapters
are merged into the weights first, whatever the format.
"""
from __future__ import annotations

from builder.cli import command
from builder.cli.args import parse_args
from builder.errors import ConfigError
from builder.serve import checkpoint, hf
from builder.settings import S

SPEC = {"ckpt": S("Any", doc="a run directory, .ckpt file, export or Hugging Face directory"),
        "out": S("Any", doc="the directory to write"),
        "format": S("Literal['builder', 'hf', 'onnx', 'gguf']", "builder",
                    "builder: ours; hf: a Hugging Face directory; onnx: model.onnx; gguf: model.gguf for llama.cpp"),
        "dtype": S("Literal['float32', 'float16']", "float32", "format=gguf: the matrices' type (norms stay float32)"),
        "allow_imports": S("bool", False, "let the model's own modules be imported")}
USAGE = "usage: builder-export ckpt=RUN_DIR|FILE.ckpt|EXPORT_DIR|HF_DIR out=DIR [format=builder|hf|onnx|gguf]"


def main(argv: list[str] | None = None) -> None:
    command("builder-export", __doc__, _main, argv, SPEC)


def _main(argv: list[str]) -> None:
    args = parse_args(argv, SPEC, usage=USAGE)
    if args["dtype"] != "float32" and args["format"] != "gguf":
        raise ConfigError(f"dtype: {args['dtype']} applies to format=gguf only; format={args['format']} writes "
                          "the weights as they are")
    from builder.graph import adapters  # deferred: config errors are reported before torch is imported
    loaded = checkpoint.load(str(args["ckpt"]), allow_imports=bool(args["allow_imports"]))
    if adapters.adapted(loaded.model):  # every format gets plain weights
        adapters.merge(loaded.model)
        loaded.config = dict(loaded.config, adapters={"name": "none"})
    out, kind = str(args["out"]), args["format"]
    if kind == "hf":
        written = hf.export(loaded, out)
    elif kind == "onnx":
        from builder.serve import onnx  # deferred: config errors are reported before torch is imported
        written = onnx.export(loaded, out)
    elif kind == "gguf":
        from builder.serve import gguf  # deferred: config errors are reported before torch is imported
        written = gguf.export(loaded, out, args["dtype"])
    else:
        written = checkpoint.export(loaded, out)
    files = sorted(p.name for p in written.iterdir())
    print(f"exported {loaded.path} to {written}: {', '.join(files)}")


if __name__ == "__main__":
    main()
