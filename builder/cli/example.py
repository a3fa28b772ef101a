"""One example for the inspection commands (builder-trace, builder-attention), read from the command line
in the form its task takes: `input=[...]` for a classifier, `prompt=` for a language model, `text=` (and
optionally `target=`) for a translator. Text is taken verbatim, commas, quotes and `=` included."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from builder.cli.args import take_raw
from builder.cli.generate import read_prompt
from builder.errors import ConfigError
from builder.pairs import encode_all, special_ids
from builder.serve.api import as_input

VERBATIM = ("prompt", "prompt_file", "text", "target")


@dataclass
class Example:
    inputs: dict[str, torch.Tensor]
    tokens: dict[str, list[str]] = field(default_factory=dict)  # input name -> its tokens, for labels


def split_verbatim(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    return take_raw(argv, VERBATIM)


def example(model: Any, raw: dict[str, str], values: Any) -> Example:
    """The model inputs for one example of `model`'s task, by the model's own input names (its roles)."""
    task, roles = model.task, model.roles
    if task == "language_model":
        ids = model.prompt_ids(read_prompt({k: v for k, v in raw.items() if k.startswith("prompt")}))
        ids = ids[-model.context:] if model.context else ids
        name = roles.inputs["tokens"]
        return Example({name: torch.tensor([ids])}, {name: [model.tokenizer.decode([i]) for i in ids]})
    if task == "seq2seq":
        if "text" not in raw:
            raise ConfigError("text: required for a translation model (text=\"...\")")
        target = raw.get("target")
        if target is None:
            target = model.translate(raw["text"])
        src = encode_all(model.src_tok, [raw["text"].strip()])[0]
        _, bos, _ = special_ids(model.tgt_tok)
        tgt = [bos] + encode_all(model.tgt_tok, [target.strip()])[0]
        inputs = roles.feed(source=torch.tensor([src]), source_padding=torch.zeros(1, len(src), dtype=torch.bool),
                            target=torch.tensor([tgt]), target_padding=torch.zeros(1, len(tgt), dtype=torch.bool))
        return Example(inputs, {roles.inputs["source"]: [model.src_tok.decode([i]) for i in src],
                                roles.inputs["target"]: [model.tgt_tok.decode([i]) or "<s>" for i in tgt]})
    if values is None:
        raise ConfigError("input: required, e.g. input=[32,107,56,11.2]")
    name = roles.inputs["features"] if "features" in roles.inputs else model.model.input_names[0]
    return Example({name: as_input("input", values, name, model.model.input_specs[name], one_row=True)})
