"""Special tokens for encoders (BERT's [PAD], [CLS], [SEP], [MASK]) and batches of padded token ids.

`with_special_tokens` adds the tokens a tokenizer lacks (after its own ids, so the ids of the text do not change)
and, when it has no post-processor, BERT's template: encoding with special tokens gives "[CLS] text [SEP]", as a
Hugging Face BERT tokenizer.json does. Ids of the text itself (what data=text stores) are never affected: they
are encoded without special tokens.
"""
from __future__ import annotations

from typing import Iterable

import torch
from tokenizers import Tokenizer as HFTokenizer, processors

from builder.tokenizer import Tokenizer

BERT_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")


def with_special_tokens(tok: Tokenizer, tokens: Iterable[str]) -> Tokenizer:
    """`tok` with each of `tokens` as a special token; a tokenizer that has them all comes back as it is."""
    tokens = list(tokens)
    missing = [t for t in tokens if tok.tok.token_to_id(t) is None]
    if not missing:
        return tok
    hf = HFTokenizer.from_str(tok.to_str())
    hf.add_special_tokens(missing)
    cls, sep = hf.token_to_id("[CLS]"), hf.token_to_id("[SEP]")
    if hf.post_processor is None and cls is not None and sep is not None:
        hf.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                          special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return Tokenizer(hf)


def special_ids(tok: Tokenizer) -> list[int]:
    """Ids of the tokenizer's special tokens ([PAD], [CLS], [SEP], [MASK], <|endoftext|>, ...), sorted."""
    return sorted(i for i, t in tok.tok.get_added_tokens_decoder().items() if t.special)


def token_id(tok: Tokenizer, token: str, where: str) -> int:
    """The id of `token`, or a one-line ValueError saying where to add it."""
    found = tok.tok.token_to_id(token)
    if found is None:
        raise ValueError(f"{where}: the tokenizer has no {token} token")
    return found


def encode_texts(tok: Tokenizer, texts: list[str], max_len: int | None, pad_id: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (N, T), attention_mask (N, T): 1 at tokens, 0 at padding) of texts encoded with the tokenizer's
    special tokens ("[CLS] text [SEP]"), cut to max_len (the last [SEP] kept) and padded to the longest."""
    template = tok.tok.post_processor is not None
    rows = [e.ids for e in tok.tok.encode_batch(texts, add_special_tokens=True)]
    if max_len is not None:
        rows = [r if len(r) <= max_len else r[:max_len - 1] + r[-1:] if template else r[:max_len] for r in rows]
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (N, T)
    mask = torch.zeros(len(rows), width, dtype=torch.long)  # (N, T)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r, dtype=torch.long), 1
    return ids, mask


def check_characters(tok: Tokenizer, texts: Iterable[str], where: str) -> None:
    """A character tokenizer cannot encode characters outside its alphabet (its added tokens such as [MASK]
    aside): a one-line ValueError naming them."""
    if tok.kind == "char":
        known = set(tok.tok.get_vocab())
        added = [t.content for t in tok.tok.get_added_tokens_decoder().values()]
        seen = set()
        for text in texts:
            for token in added:
                text = text.replace(token, "")
            seen.update(text)
        unknown = sorted(seen - known)
        if unknown:
            raise ValueError(f"{where}: characters not in the tokenizer's alphabet: {''.join(unknown)!r}")
