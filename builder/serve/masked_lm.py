"""Masked language models in Python: `builder.load(path).fill_mask("The [MASK] is returned")`.

`path` is anything `ckpt=` accepts, a Hugging Face BERT directory included (config.json, model.safetensors,
tokenizer.json). Text is encoded as the tokenizer does with its special tokens ("[CLS] text [SEP]"), as the
masked-LM task frames its training windows.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch

from builder.contract import context_length
from builder.errors import ConfigError
from builder.serve.api import LoadedModel, as_texts, check_number, token_inputs


class Fill(NamedTuple):
    token: str  # as it reads in text
    id: int
    prob: float


class MaskedLM(LoadedModel):
    def __init__(self, loaded: Any):
        super().__init__(loaded)
        self.tokenizer = self.text_tokenizer()
        self.mask_token = self.config["task"].get("mask_token") or "[MASK]"
        self.mask_id = self.tokenizer.tok.token_to_id(self.mask_token)
        if self.mask_id is None:
            raise ConfigError(f"ckpt: {self.path}: its tokenizer has no {self.mask_token} token")
        self.context = context_length(self.model.spec, self.roles.inputs["tokens"])

    @torch.no_grad()
    def fill_mask(self, text: str | list[str], top_k: int = 5) -> list[list[Fill]] | list[list[list[Fill]]]:
        """For each [MASK] of `text`, in order, the top_k tokens the model puts there with their probabilities;
        for a list of texts a list with one such answer each ([] -> []). A text without [MASK], longer than the
        model's positions, or with characters a character tokenizer lacks is a one-line ConfigError."""
        texts, one = as_texts("text", text)
        check_number("top_k", top_k, 1, integer=True)
        if not texts:
            return []
        for t in texts:
            if self.mask_token not in t:
                raise ConfigError(f"text: no {self.mask_token} in {t[:60]!r}; write {self.mask_token} where a token "
                                  "is to be predicted")
        inputs, mask = token_inputs(self, texts, "tokens", "text")
        logits = self.roles.read(self.model(**inputs)).float()  # (N, T, V)
        probs, ids = logits.softmax(-1).topk(min(int(top_k), logits.shape[-1]), dim=-1)  # (N, T, k)
        answers = []
        for i in range(len(texts)):
            where = ((inputs[self.roles.inputs["tokens"]][i] == self.mask_id) & (mask[i] == 1)).nonzero().flatten()
            answers.append([[Fill(self.tokenizer.decode([j]), j, p) for j, p in zip(ids[i, w].tolist(),
                                                                                   probs[i, w].tolist())]
                            for w in where.tolist()])
        return answers[0] if one else answers
