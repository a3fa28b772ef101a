"""Multi-head self- and cross-attention on scaled_dot_product_attention, with a KV cache for decoding.

The blocks for the Llama family (separate q/k/v projections, grouped-query attention, rotary positions, sliding
window) are in grouped_attention.py; the key/value cache used while decoding in kv_cache.py.

Masks: `pad_mask` / `kv_pad_mask` are bool (B, S) with True marking padding keys to ignore (the torch
key_padding_mask convention). Internally masks are flipped to SDPA's convention, True = may attend.
Setting `capture = True` on a module computes the attention weights explicitly and keeps them, detached,
in `.weights` (B, H, T, S) for inspection; with `capture = False` the fused kernel path is untouched.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.kv_cache import KVCache
from builder.graph.registry import block


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    B, T, C = t.shape
    return t.view(B, T, heads, C // heads).transpose(1, 2)  # (B, H, T, hd)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    B, H, T, hd = t.shape
    return t.transpose(1, 2).reshape(B, T, H * hd)  # (B, T, C)


def build_mask(pad_mask: torch.Tensor | None, T: int, S: int, causal: bool, device,
               window: int | None = None) -> torch.Tensor | None:
    """Boolean mask broadcastable to (B, H, T, S), True where query may attend key; None when all may.

    The T queries sit at positions S-T .. S-1 of the keys, so query i sees keys 0 .. S-T+i when causal, and
    with a sliding window only the last `window` of those (keys S-T+i-window+1 .. S-T+i).
    """
    mask = None if pad_mask is None else ~pad_mask[:, None, None, :]  # (B, 1, 1, S)
    if causal and T > 1:  # a single newest query sees every key: no causal mask needed
        c = torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)  # (T, S)
        if window is not None:
            c = c.triu(diagonal=S - T - window + 1)
        mask = c if mask is None else mask & c
    return mask


def additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask (True: may attend) as the 0 / -inf one SDPA makes of it on every call: made once, for a mask
    that several calls share (every layer of a decoding step)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


class Attention(nn.Module):
    """Shared core of the attention blocks: head bookkeeping, KV cache, SDPA call, optional weight capture."""

    block_name = "attention"

    def __init__(self, dim: int, heads: int, dropout: float, head_dim: int | None = None):
        super().__init__()
        if head_dim is None and dim % heads != 0:
            raise ValueError(f"{self.block_name}: dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.dropout = dropout
        self.capture = False  # when True, keep the attention weights in self.weights
        self.weights: torch.Tensor | None = None

    def cache(self, state, window: int | None = None) -> KVCache:
        """This module's key/value cache in the decoding state."""
        slot = state.slot(self)
        if "kv" not in slot:
            slot["kv"] = KVCache(window, self.block_name)
        return slot["kv"]

    @staticmethod
    def step_mask(state, pad: torch.Tensor | None, T: int, S: int, causal: bool, dtype: torch.dtype,
                  device: torch.device, window: int | None = None) -> torch.Tensor:
        """build_mask's mask of a decoding step's T queries over S keys (padding flags pad (B, S) or None),
        additive, made once per step for every layer that asks (state.once)."""
        return state.once(("mask", S, causal, window, dtype), T, lambda: additive(
            build_mask(pad, T, S, causal, device, window), dtype))

    def attend(self, q, k, v, mask, is_causal: bool = False) -> torch.Tensor:
        """q (B, H, T, hd), k and v (B, Hkv, S, hd) -> (B, T, H*hd); each group of H/Hkv query heads shares
        one key/value head (grouped-query attention; Hkv = H is multi-head attention)."""
        p = self.dropout if self.training else 0.0
        gqa = k.shape[1] != q.shape[1]
        if not self.capture:
            return merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal,
                                                              enable_gqa=gqa))
        if gqa:
            k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))  # (B, H, S, hd)
        T, S = q.shape[-2], k.shape[-2]
        if is_causal:
            mask = build_mask(None, T, S, True, q.device)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        w = scores.softmax(dim=-1)
        if mask is not None:  # a query with no visible key gets zeros (as SDPA does), not NaN
            w = w.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
        self.weights = w.detach()
        return merge_heads(F.dropout(w, p) @ v)  # (B, T, C)


@block("self_attention", attention=("x",))
class SelfAttention(Attention):
    """Multi-head self-attention (optionally causal) with a fused qkv projection and a KV cache for decoding.

    pad_mask: bool (B, S), True = padding. With a decoding state it may cover either all keys so far
    (B, offset+T) or only this call's new keys (B, T); the mask of earlier keys is then kept in the cache.
    """

    block_name = "self_attention"

    def __init__(self, dim: int, heads: int, causal: bool = False, dropout: float = 0.0, bias: bool = True):
        super().__init__(dim, heads, dropout)
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.proj.residual_projection = True  # its output joins the residual stream

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, state=None) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.heads, C // self.heads)  # (B, T, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, hd)
        if state is not None:  # k, v (B, H, S, hd); without a pad_mask input, the prompts' left padding
            cache = self.cache(state)
            if pad_mask is not None or cache.pad is not None:  # the caller's padding, kept by the cache
                k, v, pad_mask = cache.update(k, v, pad_mask)
            else:
                k, v, _ = cache.update(k, v)
                pad = state.key_padding(T, k.shape[2])  # the prompts' left padding, or None
                if pad is not None:
                    mask = self.step_mask(state, pad, T, k.shape[2], self.causal, q.dtype, x.device)
                    return self.proj(self.attend(q, k, v, mask))  # (B, T, C)
        S = k.shape[2]
        if pad_mask is None and (T == 1 or not self.causal):
            return self.proj(self.attend(q, k, v, None))  # no mask: a decoding step's one query sees every key
        if self.causal and pad_mask is None and S == T:
            return self.proj(self.attend(q, k, v, None, is_causal=True))  # fast path
        return self.proj(self.attend(q, k, v, build_mask(pad_mask, T, S, self.causal, x.device)))  # (B, T, C)


@block("cross_attention", attention=("x", "kv"))
class CrossAttention(Attention):
    """Multi-head attention from queries x (B, T, dim) to keys/values kv (B, S, kv_dim), e.g. an encoder output.

    With a decoding state, the projected keys/values of kv (and kv_pad_mask) are cached on the first call and
    reused afterwards, since the encoder output does not change while decoding; later kv inputs are ignored.
    """

    block_name = "cross_attention"

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None, dropout: float = 0.0, bias: bool = True):
        super().__init__(dim, heads, dropout)
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv_proj = nn.Linear(kv_dim or dim, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.proj.residual_projection = True  # its output joins the residual stream

    def forward(self, x: torch.Tensor, kv: torch.Tensor, kv_pad_mask: torch.Tensor | None = None, state=None) -> torch.Tensor:
        B, T, C = x.shape
        q = split_heads(self.q(x), self.heads)  # (B, H, T, hd)
        cache = None if state is None else state.slot(self)
        if cache and "k" in cache:
            k, v, kv_pad_mask = cache["k"], cache["v"], cache.get("pad")
        else:
            k, v = (split_heads(t, self.heads) for t in self.kv_proj(kv).split(C, dim=2))  # 2 x (B, H, S, hd)
            if cache is not None:
                cache["k"], cache["v"] = k, v
                if kv_pad_mask is not None:
                    cache["pad"] = kv_pad_mask
        mask = build_mask(kv_pad_mask, T, k.shape[2], False, x.device)
        return self.proj(self.attend(q, k, v, mask))  # (B, T, C)
