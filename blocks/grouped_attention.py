"""Self-attention of the Llama family: separate q/k/v projections, grouped-query attention, rotary positions,
an optional sliding window, QK-norm and per-projection biases. Llama, Mistral and Qwen2 differ only in these.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from blocks.attention import Attention, build_mask
from blocks.rope import Rotary
from builder.graph.registry import block

PROJECTIONS = ("q", "k", "v", "proj")


def biased(bias: bool | list[str]) -> set[str]:
    """The projections with a bias: all for True, none for False, or the ones named."""
    if isinstance(bias, bool):
        return set(PROJECTIONS) if bias else set()
    unknown = [b for b in bias if b not in PROJECTIONS]
    if unknown:
        raise ValueError(f"bias: unknown projection '{unknown[0]}'; projections: {', '.join(PROJECTIONS)}")
    return set(bias)


@block("attention", attention=("x",))
class GroupedQueryAttention(Attention):
    """Self-attention with `kv_heads` key/value heads shared by groups of the `heads` query heads (1: multi-query),
    rotary positions (`rope: {theta: 10000.0}`, see blocks/rope.py), a sliding window of `sliding_window` keys,
    RMS-normalised queries and keys per head (`qk_norm`), and biases on all, none or some of q, k, v and proj.
    """

    def __init__(self, dim: int, heads: int, kv_heads: int | None = None, head_dim: int | None = None,
                 causal: bool = True, rope: dict[str, Any] | None = None, sliding_window: int | None = None,
                 qk_norm: bool = False, bias: bool | list[str] = False, dropout: float = 0.0, norm_eps: float = 1e-6):
        super().__init__(dim, heads, dropout, head_dim)
        self.kv_heads = kv_heads or heads
        self.head_dim = head_dim or dim // heads
        if heads % self.kv_heads:
            raise ValueError(f"kv_heads: {self.kv_heads} does not divide heads={heads}")
        if sliding_window is not None and (sliding_window < 1 or not causal):
            raise ValueError(f"sliding_window: needs causal attention and a size >= 1, got {sliding_window}")
        self.causal, self.window = causal, sliding_window
        with_bias = biased(bias)
        self.q = nn.Linear(dim, heads * self.head_dim, bias="q" in with_bias)
        self.k = nn.Linear(dim, self.kv_heads * self.head_dim, bias="k" in with_bias)
        self.v = nn.Linear(dim, self.kv_heads * self.head_dim, bias="v" in with_bias)
        self.proj = nn.Linear(heads * self.head_dim, dim, bias="proj" in with_bias)
        self.proj.residual_projection = True  # its output joins the residual stream
        self.q_norm = nn.RMSNorm(self.head_dim, eps=norm_eps) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=norm_eps) if qk_norm else None
        self.rotary = Rotary(self.head_dim, rope) if rope is not None else None

    same_input = ("q", "k", "v")  # layers that read one input: graph/fast.py runs them as one product when decoding

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.q(x), self.k(x), self.v(x)  # (B, T, H*hd), (B, T, Hkv*hd), (B, T, Hkv*hd)

    def forward(self, x: torch.Tensor, state=None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.project(x)
        q = q.view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if state is None:
            if self.rotary is not None:  # rotated by absolute position
                q, k = self.rotary(q, k)
            if self.causal and (self.window is None or self.window >= T):
                return self.proj(self.attend(q, k, v, None, is_causal=True))  # the fused causal kernel
            mask = build_mask(None, T, T, self.causal, x.device, self.window if self.causal else None)
            return self.proj(self.attend(q, k, v, mask))  # (B, T, dim)
        # decoding: what every layer of this step shares (rotary angles, padding, mask) is made once
        if self.rotary is not None:
            angles = state.once(self.rotary.key, T, lambda: self.rotary.angles(state.offset, T, q, state.rows(T)))
            q, k = self.rotary(q, k, angles=angles)
        k, v, _ = self.cache(state, self.window).update(k, v)  # (B, Hkv, S, hd): at most window keys
        S = k.shape[2]
        pad = state.key_padding(T, S)  # (B, S): left padding of the prompts, or None
        if pad is None and (T == 1 or not self.causal):
            return self.proj(self.attend(q, k, v, None))  # (B, T, dim): every key is visible
        if pad is None and S == T and (self.window is None or self.window >= T):
            return self.proj(self.attend(q, k, v, None, is_causal=True))
        mask = self.step_mask(state, pad, T, S, self.causal, q.dtype, x.device, self.window if self.causal else None)
        return self.proj(self.attend(q, k, v, mask))  # (B, T, dim)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, kv_heads={self.kv_heads}, head_dim={self.head_dim}, window={self.window}"
