"""Decoding an encoder-decoder: the step function that feeds the decoder only new tokens (the encoder output
is computed once per source batch: GraphModel keeps nodes that depend only on the `static` inputs, the source
and its padding, in the DecodeState, and self-attention keeps a KV cache), and greedy or beam-search target
ids for a source batch. Inputs and output are found through the task's roles (builder/contract.py)."""
from __future__ import annotations

from typing import Any

import torch

from builder.contract import Roles, context_length
from builder.graph.decoding import DecodeState
from builder.serve.generation import decode


def seq2seq_step(model: torch.nn.Module, roles: Roles, src: torch.Tensor, src_pad: torch.Tensor,
                 num_beams: int = 1, use_cache: bool = True):
    """The step function for builder.serve.generation.decode: next-token logits (B', V) of the last position."""
    if num_beams > 1:  # beam rows are batch-major: row b * K + k belongs to item b
        src, src_pad = src.repeat_interleave(num_beams, 0), src_pad.repeat_interleave(num_beams, 0)

    def step(tokens: torch.Tensor, state: DecodeState) -> torch.Tensor:
        new = tokens[:, state.offset:] if use_cache else tokens  # (B', T_new)
        no_pad = torch.zeros_like(new, dtype=torch.bool)  # generated tokens are never padding
        inputs = roles.feed(source=src, source_padding=src_pad, target=new, target_padding=no_pad)
        out = model(**inputs, state=state if use_cache else None)
        if use_cache:
            state.advance(new.shape[1])
        return roles.read(out)[:, -1]  # (B', V)
    return step


@torch.no_grad()
def generate(model: torch.nn.Module, roles: Roles, src: torch.Tensor, src_pad: torch.Tensor, bos: int, eos: int, *,
             num_beams: int = 1, length_penalty: float = 1.0, max_len_ratio: float = 2.0, use_cache: bool = True,
             agree: Any = None) -> list[list[int]]:
    """Target token ids per source row, without <s> and cut before the first </s>.

    Row i gets at most max_len_ratio * (its source length) + 10 tokens, so a translation does not depend on
    which other sentences share its batch."""
    static = (roles.inputs["source"], roles.inputs["source_padding"])  # fixed while decoding: the encoder runs once
    limit = context_length(model.spec, roles.inputs["target"])
    prefix = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)  # (B, 1)
    out = decode(seq2seq_step(model, roles, src, src_pad, num_beams, use_cache), prefix,
                 max_new_tokens=max_new_tokens(limit, src.shape[1], max_len_ratio), num_beams=num_beams,
                 length_penalty=length_penalty, eos_id=eos, new_state=lambda: DecodeState(static),
                 agree=agree)  # (B, 1 + n)
    rows = []
    for row, n_src in zip(out[:, 1:].tolist(), (~src_pad).sum(1).tolist()):
        row = row[:row.index(eos)] if eos in row else row
        rows.append(row[:max_new_tokens(limit, n_src, max_len_ratio)])
    return rows


def max_new_tokens(limit: int | None, src_len: int, ratio: float = 2.0, extra: int = 10) -> int:
    """A bound on the target length: ratio * source length + extra, within the target's `limit` positions
    (<s> takes one)."""
    n = int(ratio * src_len) + extra
    return min(n, limit - 1) if limit is not None else n
