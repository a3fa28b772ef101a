"""builder-generate: continue a prompt with a trained language model, streaming the text as it is produced.

    builder-generate ckpt=RUN_DIR prompt="To be, or not to be" max_new_tokens=200 temperature=0.8 top_k=50 seed=1
    builder-generate ckpt=RUN_DIR prompt_file=prompt.txt temperature=0          # greedy
    echo "Once upon a time" | builder-generate ckpt=RUN_DIR num_beams=4          # beam search, prompt from stdin
    builder-generate ckpt=path/to/hf_dir prompt="Hello"       # a Hugging Face GPT-2, Llama, Mistral or Qwen2 directory
    builder-generate ckpt=RUN_DIR prompts_file=prompts.txt temperature=0 batch_size=8 > completions.jsonl

The prompt is taken verbatim from `prompt=` (everything after the first "=", commas, quotes and "=" included),
`prompt_file=`, or standard input when it is not a terminal. temperature=0 is greedy; num_beams>1 is beam
search (printed once finished). seed= makes sampling repeatable; use_cache=false recomputes every position.

`prompts_file=` holds many prompts, one per line (a .jsonl file: one JSON string or {"prompt": ...} per line,
for prompts with newlines); they are decoded `batch_size` at a time in left-padded batches (greedy and beam
continuations equal one-at-a-time ones) and printed as JSON lines {"prompt": ..., "completion": ...} in order.
"""
from __future__ import annotations

import json
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
        "batch_size": S("int", 8, "prompts decoded together (prompts_file)", low=1),
        "prompt": S("str | None", None, "taken verbatim"), "prompt_file": S("str | None", None),
        "prompts_file": S("str | None", None, "many prompts, one per line (or .jsonl)")}
VERBATIM = ("prompt", "prompt_file", "prompts_file")  # never parsed: a prompt is text, whatever it looks like
USAGE = ("usage: builder-generate ckpt=RUN_DIR|FILE.ckpt|EXPORT_DIR|HF_GPT2_DIR [prompt=TEXT | prompt_file=FILE | prompts_file=FILE] "
         "[max_new_tokens=200] [temperature=0.8] [top_k=N] [top_p=P] [num_beams=1] [seed=N] [batch_size=8]")


def read_text(key: str, value: str) -> str:
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}: {path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{key}: {path} is not UTF-8 text (byte offset {e.start})") from None


def read_prompt(raw: dict[str, str]) -> str:
    given = [k for k in VERBATIM if k in raw]
    if len(given) > 1:
        raise ConfigError(f"{', '.join(given)}: give one of them, not several")
    if "prompt" in raw:
        return raw["prompt"]
    if "prompt_file" in raw:
        return read_text("prompt_file", raw["prompt_file"])
    return "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()


def read_prompts(value: str) -> list[str]:
    """The prompts of a prompts_file: one per line, or one JSON string or {"prompt": ...} per line of a .jsonl."""
    text = read_text("prompts_file", value)
    if not value.endswith(".jsonl"):
        return text.splitlines()
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"prompts_file: {value}, line {number}: not JSON ({e.msg})") from None
        prompt = item.get("prompt") if isinstance(item, dict) else item
        if not isinstance(prompt, str):
            raise ConfigError(f"prompts_file: {value}, line {number}: expected a JSON string or an object with a "
                              f"string 'prompt'; got {line.strip()[:60]}")
        prompts.append(prompt)
    return prompts


def main(argv: list[str] | None = None) -> None:
    command("builder-generate", __doc__, run, argv, SPEC)


def run(argv: list[str]) -> str:
    """Stream the prompt and its continuation to stdout; return them."""
    raw, rest = take_raw(argv, VERBATIM)
    args = parse_args(rest, SPEC, usage=USAGE)
    prompt = read_prompt(raw) if "prompts_file" not in raw else ""
    prompts = read_prompts(raw["prompts_file"]) if "prompts_file" in raw else None
    from builder.serve.lm import load  # deferred: argument errors are reported before torch is imported
    model = load(str(args["ckpt"]), allow_imports=bool(args["allow_imports"]))
    settings = dict(max_new_tokens=args["max_new_tokens"], temperature=args["temperature"], top_k=args["top_k"],
                    top_p=args["top_p"], num_beams=args["num_beams"], length_penalty=args["length_penalty"],
                    seed=args["seed"], use_cache=bool(args["use_cache"]), compile=bool(args["compile"]))
    if prompts is not None:
        return many(model, prompts, args["batch_size"], settings)
    model.prompt_ids(prompt)  # a prompt the tokenizer cannot encode fails before anything is printed

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    write(prompt)
    text = model.generate(prompt, stream=write, **settings)
    write("\n")
    return prompt + text


def many(model, prompts: list[str], batch_size: int, settings: dict) -> str:
    """Each prompt's completion as a JSON line, batch by batch as they finish; a progress line on stderr."""
    for number, p in enumerate(prompts, 1):  # a prompt the tokenizer cannot encode fails before any is decoded
        try:
            model.prompt_ids(p)
        except ConfigError as e:
            raise ConfigError(f"prompts_file: prompt {number}: {str(e).removeprefix('prompt: ')}") from None
    lines = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        for p, completion in zip(batch, model.generate(batch, batch_size=batch_size, **settings)):
            lines.append(json.dumps({"prompt": p, "completion": completion}, ensure_ascii=False))
            print(lines[-1], flush=True)
        print(f"builder-generate: {start + len(batch)}/{len(prompts)} prompts", file=sys.stderr, flush=True)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
