"""The key/value cache of one attention module while decoding (kept in the decoding state's slot for it)."""
from __future__ import annotations

import torch


class KVCache:
    """Keys and values of the positions decoded so far, (B, H, S, hd) each, and their padding flags if any.

    The buffers grow by doubling, so a step writes only its own positions. With a `window` (sliding-window
    attention) a new query sees the last `window` positions, its own included: older keys are dropped by moving
    a start index, and the kept ones move to the front of a fresh buffer only when the buffer is full, about
    once every `window` steps. Keys are cached as given, so rotary keys keep the rotation of their position.
    """

    def __init__(self, window: int | None = None, name: str = "attention"):
        self.window, self.name = window, name
        self.k: torch.Tensor | None = None  # (B, H, capacity, hd)
        self.v: torch.Tensor | None = None
        self.start = self.end = 0  # the kept keys are k[:, :, start:end]
        self.seen = 0  # positions written in all
        self.pad: torch.Tensor | None = None  # (B, end - start) bool, True at padding; None: no padding so far

    def update(self, k: torch.Tensor, v: torch.Tensor, pad: torch.Tensor | None = None):
        """Append this call's keys and values (B, H, T, hd) and padding flags (B, T) (or (B, seen + T): all
        positions so far); return the kept keys and values (B, H, S, hd) and padding flags (B, S) or None."""
        T = k.shape[2]
        if self.window is not None and self.end - self.start > self.window - 1:
            self.start = self.end - (self.window - 1)  # keys no later query can see
        if self.k is None or self.end + T > self.k.shape[2]:
            self._grow(k, v, T)
        self.k[:, :, self.end:self.end + T] = k
        self.v[:, :, self.end:self.end + T] = v
        self.end, self.seen = self.end + T, self.seen + T
        if pad is not None or self.pad is not None:
            self.pad = self._padding(pad, T, k.shape[0], k.device)
        return self.k[:, :, self.start:self.end], self.v[:, :, self.start:self.end], self.pad  # (B, H, S, hd)

    def _grow(self, k: torch.Tensor, v: torch.Tensor, T: int) -> None:
        """Fresh buffers of twice the kept length (at least 64 and room for T), the kept keys at the front."""
        B, H, _, hd = k.shape
        kept = self.end - self.start
        capacity = max(kept + T, 2 * kept, 64)
        new_k, new_v = k.new_empty(B, H, capacity, hd), v.new_empty(B, H, capacity, v.shape[-1])
        if kept:
            new_k[:, :, :kept], new_v[:, :, :kept] = self.k[:, :, self.start:self.end], self.v[:, :, self.start:self.end]
        self.k, self.v, self.start, self.end = new_k, new_v, 0, kept

    def _padding(self, pad: torch.Tensor | None, T: int, B: int, device: torch.device) -> torch.Tensor:
        S = self.end - self.start
        if pad is None:
            pad = torch.zeros(B, T, dtype=torch.bool, device=device)
        if pad.shape[1] not in (T, self.seen):
            raise ValueError(f"{self.name}: pad_mask covers {pad.shape[1]} keys; expected {T} (this call) or "
                             f"{self.seen} (all cached keys)")
        if pad.shape[1] == T and S > T:  # only the new keys: the kept earlier flags go in front
            prev = (self.pad[:, self.pad.shape[1] - (S - T):] if self.pad is not None
                    else torch.zeros(B, S - T, dtype=torch.bool, device=device))
            pad = torch.cat([prev, pad], dim=1)
        return pad[:, pad.shape[1] - S:]  # (B, S)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (beam search follows its surviving beams)."""
        self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)
        if self.pad is not None:
            self.pad = self.pad.index_select(0, index)
