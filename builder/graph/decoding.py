"""State for incremental decoding: per-module caches (keys and values: blocks/kv_cache.py), the number of
positions already processed (where new positions start: learned, sinusoidal and rotary positions read it), the
values of nodes that depend only on inputs that stay fixed while decoding (an encoder's output is computed
once per source batch), and the left padding of a batch of prompts of different lengths.

Left padding: prompts are right-aligned in one (B, T0) batch, `pad` (B, T0) True at the filler columns in front
of each. Position blocks then read `rows(T)`, each row's own positions (its first real token is position 0),
and attention blocks read `key_padding(T, S)`, the filler columns among their cached keys; every row computes what it would
alone, and all rows decode in step."""
from __future__ import annotations

from typing import Any, Callable

import torch


class DecodeState:
    def __init__(self, static: tuple[str, ...] | list[str] = (), pad: torch.Tensor | None = None):
        self.offset = 0  # positions already processed and cached
        self.static = frozenset(static)  # model inputs that do not change between steps
        self.values: dict[str, Any] = {}  # node name -> value, for nodes that depend only on static inputs
        self._slots: dict[int, dict[str, Any]] = {}
        self.set_padding(pad)

    def set_padding(self, pad: torch.Tensor | None) -> None:
        """pad (B, T0): True at the left padding of each prompt (None, or no True: every row starts at column 0)."""
        self.pad = pad if pad is not None and bool(pad.any()) else None  # (B, T0)
        self._lead = None if self.pad is None else self.pad.sum(dim=1, keepdim=True)  # (B, 1) filler columns
        self._memo: dict[tuple[str, int, int], torch.Tensor] = {}

    def once(self, kind: Any, T: int, make: Callable[[], Any]) -> Any:
        """What `make` gives for this call's T columns, made once per step: every layer asks the same (the
        padding, positions, rotary angles and attention mask of a step), `kind` (hashable) names what."""
        key = (kind, self.offset, T)
        if key not in self._memo:
            self._memo = {k: v for k, v in self._memo.items() if k[1] == self.offset}  # earlier steps' go
            self._memo[key] = make()
        return self._memo[key]

    def key_padding(self, T: int, S: int) -> torch.Tensor | None:
        """(B, S) True where the last S cached key positions (offset+T-S .. offset+T-1: a KV cache after this
        call's update) are left padding; None without padding or once those keys are all past the prompts."""
        end = self.offset + T
        if self.pad is None or end - S >= self.pad.shape[1]:
            return None

        def make() -> torch.Tensor:
            flags = self.pad[:, end - S:end]  # (B, <= S): positions past the prompt have no padding
            if flags.shape[1] < S:
                flags = torch.cat([flags, flags.new_zeros(flags.shape[0], S - flags.shape[1])], dim=1)
            return flags  # (B, S)
        return self.once(("key_padding", S), T, make)

    def rows(self, T: int) -> torch.Tensor | None:
        """(B, T) positions of this call's columns in each row (0 at its first real token, padding at 0); None
        without padding, when every row's positions are offset .. offset+T-1."""
        if self.pad is None:
            return None

        def make() -> torch.Tensor:
            columns = torch.arange(self.offset, self.offset + T, device=self.pad.device)  # (T,)
            return (columns - self._lead).clamp(min=0)  # (B, T)
        return self.once("rows", T, make)

    def slot(self, module: torch.nn.Module) -> dict[str, Any]:
        """A dict that persists across decoding steps for this module instance."""
        return self._slots.setdefault(id(module), {})

    def advance(self, n: int) -> None:
        self.offset += n

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search keeps the caches of the surviving beams). Tensors with a batch
        dimension of 1 are broadcast over the batch (a position table) and stay as they are; a cache object
        reorders itself."""
        for slot in self._slots.values():
            for key, value in slot.items():
                if hasattr(value, "reorder"):
                    value.reorder(index)
                else:
                    slot[key] = _select(value, index)
        self.values = {k: _select(v, index) for k, v in self.values.items()}
        if self.pad is not None:
            self.set_padding(self.pad.index_select(0, index))


def _select(value: Any, index: torch.Tensor) -> Any:
    if not isinstance(value, torch.Tensor) or (value.shape[0] == 1 and index.numel() > 1):
        return value
    return value.index_select(0, index)
