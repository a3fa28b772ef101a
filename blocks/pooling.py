"""Pooling a sequence into one vector: the first position (BERT's [CLS]) or the mean over the tokens."""
from __future__ import annotations

from typing import Literal

import torch

from builder.graph.registry import block


@block("pool")
def pool(x: torch.Tensor, pad_mask: torch.Tensor | None = None, *,
         mode: Literal["first", "mean"] = "first") -> torch.Tensor:
    """(B, T, C) -> (B, C): the vector at position 0 (`first`, BERT's [CLS]) or the mean over the positions that
    are not padding (`mean`; pad_mask bool (B, T), True at padding, as self_attention takes it)."""
    if mode == "first":
        return x[:, 0]  # (B, C)
    if mode != "mean":
        raise ValueError(f"pool: mode must be 'first' or 'mean', got {mode!r}")
    if pad_mask is None:
        return x.mean(dim=1)  # (B, C)
    keep = (~pad_mask).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)  # (B, C): an all-padding row gives zeros
