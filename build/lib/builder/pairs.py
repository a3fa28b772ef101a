"""Tokenizers for sequence-to-sequence data and models: the special tokens <pad> <s> </s>, both sides'
tokenizers in one tokenizer.json, and batches of token ids with padding masks. Shared by the training data
and by translation, so neither imports the other."""
from __future__ import annotations

import json

import torch

from builder.tokenizer import Tokenizer

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
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
