"""builder-generate: continue a prompt with a trained language model, streaming the text as it is produced.

    builder-generate ckpt=RUN_DIR prompt="To be, or not to be" max_new_tokens=200 temperature=0.8 top_k=50 seed=1
    builder-generate ckpt=RUN_DIR prompt_file=prompt.txt temperature=0          # greedy
    echo "Once upon a time" | builder-generate ckpt=RUN_DIR num_beams=4          # beam search, prompt from stdin
    builder-generate ckpt=path/to/hf_dir prompt="Hello"       # a Hugging Face GPT-2, Llama, Mistral or Qwen2 directory

The prompt is taken verbatim from `prompt=` (everything after the first "=", commas, quotes and "=" included),
`prompt_file=`, or standard input when it is not a terminal. temperature=0 is greedy; num_beams>1 is beam
search (printed once finished). seed= makes sampling repeatable; use_cache=false recomputes every position.
"""
from __future__ import annotations

import sys
from pathlib import Path

from builder.cli import command
from builder.cli.args import parse_args, take_raw
from builder.errors import ConfigError
from builder.settings import S

SPEC = {"ckpt": S("Any", doc="a run directory, .ckpt file, export or Hugging Face directory"),
        "max_new_tokens": S("int", 200, low=0), "temperature": S("float", 0.8, "0: greedy", low=0),
        "top_k": S("int | None", None, low=1), "top_p": S("float | None", None, low=0, high=1, above=True),
        "num_beams": S("int", 1, "> 1: beam search", low=1), "length_penalty": S("float", 1.0),
        "seed": S("int | None", None, "makes sampling repeatable", low=0), "use_cache": S("bool", True),
        "compile": S("bool", False, "torch.compile the model: worth it on a GPU"),
        "allow_imports": S("bool", False, "let the model's own modules be imported"),
        "prompt": S("str | None", None, "taken verbatim"), "prompt_file": S("str | None", None)}
VERBATIM = ("prompt", "prompt_file")  # never parsed: a prompt is text, whatever it looks like
USAGE = ("usage: builder-generate ckpt=RUN_DIR|FILE.ckpt|EXPORT_DIR|HF_GPT2_DIR [prompt=TEXT | prompt_file=FILE] "
         "[max_new_tokens=200] [temperature=0.8] [top_k=N] [top_p=P] [num_beams=1] [seed=N]")


def read_prompt(raw: dict[str, str]) -> str:
    if "prompt" in raw and "prompt_file" in raw:
        raise ConfigError("prompt, prompt_file: give one of them, not both")
    if "prompt" in raw:
        return raw["prompt"]
    if "prompt_file" in raw:
        path = Path(raw["prompt_file"]).expanduser()
        if not path.is_file():
            raise ConfigError(f"prompt_file: {path} does not exist")
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"prompt_file: {path} is not UTF-8 text (byte offset {e.start})") from None
    return "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()


def main(argv: list[str] | None = None) -> None:
    command("builder-generate", __doc__, run, argv, SPEC)


def run(argv: list[str]) -> str:
    """Stream the prompt and its continuation to stdout; return them."""
    raw, rest = take_raw(argv, VERBATIM)
    args = parse_args(rest, SPEC, usage=USAGE)
    prompt = read_prompt(raw)
    from builder.serve.lm import load
    model = load(str(args["ckpt"]), allow_imports=bool(args["allow_imports"]))
    model.prompt_ids(prompt)  # a prompt the tokenizer cannot encode fails before anything is printed

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    write(prompt)
    text = model.generate(prompt, max_new_tokens=args["max_new_tokens"], temperature=args["temperature"],
                          top_k=args["top_k"], top_p=args["top_p"], num_beams=args["num_beams"],
                          length_penalty=args["length_penalty"], seed=args["seed"], stream=write,
                          use_cache=bool(args["use_cache"]), compile=bool(args["compile"]))
    write("\n")
    return prompt + text


if __name__ == "__main__":
    main()
