"""State for incremental decoding: per-module caches (keys and values: blocks/kv_cache.py), the number of
positions already processed (where new positions start: learned, sinusoidal and rotary positions read it), and
the values of nodes that depend only on inputs that stay fixed while decoding (an encoder's output is computed
once per source batch)."""
from __future__ import annotations

from typing import Any

import torch


class DecodeState:
    def __init__(self, static: tuple[str, ...] | list[str] = ()):
        self.offset = 0  # positions already processed and cached
        self.static = frozenset(static)  # model inputs that do not change between steps
        self.values: dict[str, Any] = {}  # node name -> value, for nodes that depend only on static inputs
        self._slots: dict[int, dict[str, Any]] = {}

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


def _select(value: Any, index: torch.Tensor) -> Any:
    if not isinstance(value, torch.Tensor) or (value.shape[0] == 1 and index.numel() > 1):
        return value
    return value.index_select(0, index)
