"""Rotary position embeddings (Su et al., 2021), the `rope:` option of the `attention` block.

Each head's dimensions j and j + hd/2 form a pair rotated by the angle position * inv_freq[j] (the "rotate
half" layout of Hugging Face's Llama-family checkpoints, computed with the same floats). `rope` is a mapping:

    theta: 10000.0          the base of the frequencies: inv_freq[j] = theta ** (-2j / hd)
    type: default           default | linear | llama3 (context extension by scaled frequencies)
    factor: 8.0             linear: every frequency / factor; llama3: low frequencies / factor
    low_freq_factor: 1.0    llama3: wavelengths above original_max_len / low_freq_factor are scaled ...
    high_freq_factor: 4.0   ... those below original_max_len / high_freq_factor are kept, a ramp between
    original_max_len: 8192  llama3: the context length the model was first trained with
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

TYPES = ("default", "linear", "llama3")
KEYS = ("theta", "type", "factor", "low_freq_factor", "high_freq_factor", "original_max_len")


def inverse_frequencies(head_dim: int, theta: float = 10000.0, type: str = "default", factor: float = 1.0,
                        low_freq_factor: float = 1.0, high_freq_factor: float = 4.0,
                        original_max_len: int | None = None) -> torch.Tensor:
    """inv_freq (head_dim / 2,), float32, computed as transformers computes it (the same floats)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if type == "linear":
        return inv_freq / factor
    if type == "llama3":
        low_wavelen, high_wavelen = original_max_len / low_freq_factor, original_max_len / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)  # long wavelengths: / factor
        smooth = (original_max_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        ramp = (1 - smooth) * scaled / factor + smooth * scaled  # in between: a mix of both
        between = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(between, ramp, scaled)
    return inv_freq


def check_rope(rope: dict[str, Any]) -> dict[str, Any]:
    """The rope mapping's arguments for inverse_frequencies; a bad key or value is a one-line ValueError."""
    for key in rope:
        if key not in KEYS:
            raise ValueError(f"rope.{key}: unknown key; known: {', '.join(KEYS)}")
    kind = rope.get("type", "default")
    if kind not in TYPES:
        raise ValueError(f"rope.type: '{kind}' is not supported; supported: {', '.join(TYPES)}")
    needs = {"linear": ("factor",), "llama3": ("factor", "original_max_len")}.get(kind, ())
    for key in needs:
        if rope.get(key) is None:
            raise ValueError(f"rope.{key}: required for type {kind}")
    return {k: v for k, v in rope.items() if v is not None}


class Rotary(nn.Module):
    """Rotates queries and keys (B, H, T, hd) by their absolute positions offset .. offset + T - 1."""

    def __init__(self, head_dim: int, rope: dict[str, Any]):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rope: the head dimension must be even, got {head_dim}")
        self.settings = check_rope(rope)
        # not persistent: a function of the arguments, so checkpoints need not carry it
        self.register_buffer("inv_freq", inverse_frequencies(head_dim, **self.settings), persistent=False)
        self.cos = self.sin = None  # (n, hd) tables of positions 0 .. n-1, grown by doubling when needed
        self.key = ("rope", head_dim, *sorted(self.settings.items()))  # equal keys: equal angles

    def tables(self, end: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cos is None or self.cos.shape[0] < end or self.cos.device != like.device:
            n = max(end, 2 * (self.cos.shape[0] if self.cos is not None else 0), 64)
            with torch.inference_mode(False):  # tables made while generating must serve training too
                freqs = torch.arange(n, device=like.device).float()[:, None] * self.inv_freq.float()  # (n, hd/2)
                # rotating the pair (x_j, x_j+hd/2) by angle a: (x_j cos a - x_j+hd/2 sin a, x_j+hd/2 cos a + x_j sin a)
                self.cos = torch.cat((freqs.cos(), freqs.cos()), dim=-1)  # (n, hd)
                self.sin = torch.cat((-freqs.sin(), freqs.sin()), dim=-1)  # (n, hd), signed for the halves swapped
        return self.cos, self.sin

    def angles(self, offset: int, T: int, like: torch.Tensor,
               rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin of positions offset .. offset+T-1, (T, hd), or of each row's own positions rows
        (B, T) (left-padded decoding), (B, 1, T, hd); in like's dtype."""
        cos, sin = self.tables(offset + T, like)
        if rows is not None:
            cos, sin = cos[rows][:, None], sin[rows][:, None]  # (B, 1, T, hd)
        else:
            cos, sin = cos[offset:offset + T], sin[offset:offset + T]  # (T, hd)
        if cos.dtype != like.dtype:
            cos, sin = cos.to(like.dtype), sin.to(like.dtype)
        return cos, sin

    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0,
                angles: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions offset .. offset+T-1, or `angles` made by `angles()` (once for every layer of a decoding
        step, with each row's own positions when prompts are left-padded)."""
        half = q.shape[3] // 2
        cos, sin = angles if angles is not None else self.angles(offset, q.shape[2], q)
        # x.roll(half) swaps the halves: (x_j+hd/2, x_j); with the signed sines that is the rotation above:
        # x * cos + x.roll(half) * sin, in one kernel fewer (addcmul)
        return (torch.addcmul(q * cos, q.roll(half, dims=-1), sin),
                torch.addcmul(k * cos, k.roll(half, dims=-1), sin))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items())
