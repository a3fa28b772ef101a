"""Translation with a trained encoder-decoder: text -> token ids -> greedy or beam search -> text.

The decoder is fed only new tokens each step: the encoder output is computed once per source batch
(GraphModel keeps nodes that depend only on the `static` inputs src, src_pad in the DecodeState) and
self-attention keeps a KV cache. Both sides' tokenizers carry the special tokens <pad> <s> </s>.

    model = builder.load("outputs/.../")        # a Translator for seq2seq runs
    model.translate(["three hundred twenty-one"], num_beams=4)   # ["dreihunderteinundzwanzig"]
"""
from __future__ import annotations

import json
from typing import Any

import torch

from builder.serve.api import LoadedModel, as_texts, check_number
from builder.graph.decoding import DecodeState
from builder.errors import ConfigError
from builder.tokenizer import Tokenizer

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
STATIC = ("src", "src_pad")  # inputs that stay fixed while decoding: the encoder runs once


def new_state() -> DecodeState:
    return DecodeState(static=STATIC)


# --- tokenizers -----------------------------------------------------------------------------------------

def with_specials(tok: Tokenizer) -> Tokenizer:
    tok.tok.add_special_tokens([PAD, BOS, EOS])
    return tok


def special_ids(tok: Tokenizer) -> tuple[int, int, int]:
    """(pad, bos, eos) ids."""
    ids = tuple(tok.tok.token_to_id(t) for t in (PAD, BOS, EOS))
    if None in ids:
        raise ValueError(f"the tokenizer lacks the special tokens {PAD} {BOS} {EOS}")
    return ids  # type: ignore[return-value]


def target_text(tok: Tokenizer, ids: list[int]) -> str:
    """A decoded translation: special tokens the model emitted (<s> from a briefly trained one) are dropped,
    the same on every path (greedy, beam search, validation)."""
    return tok.decode(ids, skip_special=True)


def tokenizers_to_str(src: Tokenizer, tgt: Tokenizer) -> str:
    """One tokenizer.json: the shared tokenizer itself, or {"source": ..., "target": ...}."""
    if src is tgt:
        return src.to_str()
    return json.dumps({"source": json.loads(src.to_str()), "target": json.loads(tgt.to_str())})


def tokenizers_from_str(text: str) -> tuple[Tokenizer, Tokenizer]:
    obj = json.loads(text)
    if "source" in obj and "target" in obj:
        return Tokenizer.from_str(json.dumps(obj["source"])), Tokenizer.from_str(json.dumps(obj["target"]))
    tok = Tokenizer.from_str(text)
    return tok, tok


def encode_all(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of many texts; characters map through the vocabulary directly (several times faster than
    the tokenizers library's per-character regex split, which matters for 10^5 training pairs)."""
    if tok.kind != "char":
        return tok.encode_batch(texts)
    vocab = tok.tok.get_vocab(with_added_tokens=False)
    try:
        return [[vocab[c] for c in text] for text in texts]
    except KeyError as e:
        raise ValueError(f"character {e.args[0]!r} is not in the tokenizer's alphabet") from None


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> ids (B, S) and padding mask (B, S), True at padding."""
    lengths = torch.tensor([len(s) for s in seqs])  # (B,)
    ids = torch.full((len(seqs), max(1, int(lengths.max()))), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, torch.arange(ids.shape[1])[None] >= lengths[:, None]  # (B, S), (B, S)


# --- decoding -------------------------------------------------------------------------------------------

def logits_of(out: Any, output: str | None = None) -> torch.Tensor:
    return out[output or ("logits" if "logits" in out else next(iter(out)))] if isinstance(out, dict) else out


def seq2seq_step(model: torch.nn.Module, src: torch.Tensor, src_pad: torch.Tensor, num_beams: int = 1,
                 use_cache: bool = True, output: str | None = None):
    """The step function for builder.serve.generation.decode: next-token logits (B', V) of the last position."""
    if num_beams > 1:  # beam rows are batch-major: row b * K + k belongs to item b
        src, src_pad = src.repeat_interleave(num_beams, 0), src_pad.repeat_interleave(num_beams, 0)

    def step(tokens: torch.Tensor, state: DecodeState) -> torch.Tensor:
        new = tokens[:, state.offset:] if use_cache else tokens  # (B', T_new)
        no_pad = torch.zeros_like(new, dtype=torch.bool)  # generated tokens are never padding
        out = model(src=src, src_pad=src_pad, tgt=new, tgt_pad=no_pad, state=state if use_cache else None)
        if use_cache:
            state.advance(new.shape[1])
        return logits_of(out, output)[:, -1]  # (B', V)
    return step


@torch.no_grad()
def generate(model: torch.nn.Module, src: torch.Tensor, src_pad: torch.Tensor, bos: int, eos: int, *,
             num_beams: int = 1, length_penalty: float = 1.0, max_len_ratio: float = 2.0, use_cache: bool = True,
             output: str | None = None, agree: Any = None) -> list[list[int]]:
    """Target token ids per source row, without <s> and cut before the first </s>.

    Row i gets at most max_len_ratio * (its source length) + 10 tokens, so a translation does not depend on
    which other sentences share its batch."""
    from builder.serve.generation import decode
    prefix = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)  # (B, 1)
    out = decode(seq2seq_step(model, src, src_pad, num_beams, use_cache, output), prefix,
                 max_new_tokens=max_new_tokens(model, src.shape[1], max_len_ratio), num_beams=num_beams,
                 length_penalty=length_penalty, eos_id=eos, new_state=new_state, agree=agree)  # (B, 1 + n)
    rows = []
    for row, n_src in zip(out[:, 1:].tolist(), (~src_pad).sum(1).tolist()):
        row = row[:row.index(eos)] if eos in row else row
        rows.append(row[:max_new_tokens(model, n_src, max_len_ratio)])
    return rows


def max_new_tokens(model: torch.nn.Module, src_len: int, ratio: float = 2.0, extra: int = 10) -> int:
    """A bound on the target length: ratio * source length + extra, within the model's position table."""
    limit = model.spec.variables.get("max_len") if hasattr(model, "spec") else None
    n = int(ratio * src_len) + extra
    return min(n, int(limit) - 1) if isinstance(limit, int) else n


def translate_texts(model: torch.nn.Module, src_tok: Tokenizer, tgt_tok: Tokenizer, texts: list[str], *,
                    num_beams: int = 1, length_penalty: float = 1.0, batch_size: int = 64,
                    max_len_ratio: float = 2.0, use_cache: bool = True, output: str | None = None) -> list[str]:
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
        rows = generate(model, src, src_pad, bos, eos, num_beams=num_beams, length_penalty=length_penalty,
                        max_len_ratio=max_len_ratio, use_cache=use_cache, output=output)
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
        out = translate_texts(self.model, self.src_tok, self.tgt_tok, items,
                              num_beams=num_beams, length_penalty=length_penalty, batch_size=batch_size,
                              use_cache=use_cache, output=self.config["task"].get("output"))
        return out[0] if one else out
