"""The position-wise feed-forward network of a transformer layer, plain or gated (SwiGLU, GeGLU)."""
from __future__ import annotations

from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from blocks.activations import ACTIVATIONS
from builder.graph.registry import block


@block("feed_forward")
class FeedForward(nn.Module):
    """Position-wise feed-forward network: linear -> activation -> dropout -> linear."""

    # the names of blocks.activations.ACTIVATIONS, spelled out so that the config check catches a typo
    def __init__(self, dim: int, hidden: int,
                 activation: Literal["gelu", "gelu_tanh", "leaky_relu", "relu", "sigmoid", "step", "tanh"] = "relu",
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"feed_forward: unknown activation '{activation}'; known: {', '.join(sorted(ACTIVATIONS))}")
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.drop = nn.Dropout(dropout) if dropout > 0 else None  # None: no module call on the hot path
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.fc2.residual_projection = True  # its output joins the residual stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(x))  # (B, T, hidden)
        return self.fc2(h if self.drop is None else self.drop(h))  # (B, T, dim)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"


GATES = {"swiglu": F.silu, "geglu": F.gelu, "geglu_tanh": partial(F.gelu, approximate="tanh")}


@block("gated_feed_forward")
class GatedFeedForward(nn.Module):
    """Gated feed-forward network (Shazeer, 2020): down(act(gate(x)) * up(x)), act = SiLU (swiglu, Llama) or GELU."""

    def __init__(self, dim: int, hidden: int, activation: Literal["swiglu", "geglu", "geglu_tanh"] = "swiglu",
                 dropout: float = 0.0, bias: bool = False):
        super().__init__()
        if activation not in GATES:
            raise ValueError(f"gated_feed_forward: unknown activation '{activation}'; known: {', '.join(GATES)}")
        self.activation = activation
        self.act = GATES[activation]
        self.gate = nn.Linear(dim, hidden, bias=bias)
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.drop = nn.Dropout(dropout) if dropout > 0 else None  # None: no module call on the hot path
        self.down = nn.Linear(hidden, dim, bias=bias)
        self.down.residual_projection = True  # its output joins the residual stream

    same_input = ("gate", "up")  # layers that read one input: graph/fast.py runs them as one product when decoding

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gate(x), self.up(x)  # (B, T, hidden) each

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.project(x)
        h = self.act(gate) * up  # (B, T, hidden)
        return self.down(h if self.drop is None else self.drop(h))  # (B, T, dim)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"
