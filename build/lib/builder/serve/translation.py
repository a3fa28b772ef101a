"""Translation with a trained encoder-decoder: text -> token ids -> greedy or beam search (builder/serve/seq2seq.py)
-> text. Both sides' tokenizers carry the special tokens <pad> <s> </s> (builder/pairs.py).

    model = builder.load("outputs/.../")        # a Translator for seq2seq runs
    model.translate(["three hundred twenty-one"], num_beams=4)   # ["dreihunderteinundzwanzig"]
"""
from __future__ import annotations

from typing import Any

import torch

from builder.contract import Roles
from builder.errors import ConfigError
from builder.pairs import encode_all, pad_batch, special_ids, target_text, tokenizers_from_str
from builder.serve.api import LoadedModel, as_texts, check_number
from builder.serve.seq2seq import generate
from builder.tokenizer import Tokenizer


def translate_texts(model: torch.nn.Module, roles: Roles, src_tok: Tokenizer, tgt_tok: Tokenizer, texts: list[str],
                    *, num_beams: int = 1, length_penalty: float = 1.0, batch_size: int = 64,
                    max_len_ratio: float = 2.0, use_cache: bool = True) -> list[str]:
    """Translations in input order; sources are batched by length so that little work goes to padding."""
    pad, _, _ = special_ids(src_tok)
    _, bos, eos = special_ids(tgt_tok)
    ids = encode_all(src_tok, [t.strip() for t in texts])
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    result: list[str] = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        src, src_pad = (t.to(device) for t in pad_batch([ids[i] for i in chunk], pad))  # (B, S)
        rows = generate(model, roles, src, src_pad, bos, eos, num_beams=num_beams, length_penalty=length_penalty,
                        max_len_ratio=max_len_ratio, use_cache=use_cache)
        for i, row in zip(chunk, rows):
            result[i] = target_text(tgt_tok, row) if ids[i] else ""  # an empty line stays empty
    return result


class Translator(LoadedModel):
    """A trained seq2seq model: `translate(texts)` -> translations."""

    def __init__(self, loaded: Any):
        super().__init__(loaded)
        if not self.tokenizer_json:
            raise ConfigError(f"ckpt: {self.path} holds no tokenizer, so it cannot translate text")
        self.src_tok, self.tgt_tok = tokenizers_from_str(self.tokenizer_json)

    def translate(self, texts: str | list[str], num_beams: int = 1, length_penalty: float = 1.0,
                  batch_size: int = 64, use_cache: bool = True) -> str | list[str]:
        """One translation per text: a str for a str, a list for a list or tuple of str ([] -> []); greedy with
        num_beams=1, else beam search. Other texts, num_beams or batch_size < 1 raise a one-line ConfigError."""
        items, one = as_texts("texts", texts)
        check_number("num_beams", num_beams, 1, integer=True)
        check_number("length_penalty", length_penalty)
        check_number("batch_size", batch_size, 1, integer=True)
        out = translate_texts(self.model, self.roles, self.src_tok, self.tgt_tok, items, num_beams=num_beams,
                              length_penalty=length_penalty, batch_size=batch_size, use_cache=use_cache)
        return out[0] if one else out
