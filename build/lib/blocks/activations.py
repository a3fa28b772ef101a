"""Element-wise activation functions, and the name -> function table that feed_forward uses."""
from __future__ import annotations

from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F

from builder.graph.registry import block


@block("relu")
def relu(x: torch.Tensor) -> torch.Tensor:
    """Rectified linear unit: max(x, 0)."""
    return F.relu(x)


@block("gelu")
def gelu(x: torch.Tensor, *, approximate: Literal["none", "tanh"] = "none") -> torch.Tensor:
    """Gaussian error linear unit; approximate="tanh" is the GPT-2 variant."""
    return F.gelu(x, approximate=approximate)


@block("sigmoid")
def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Logistic sigmoid: 1 / (1 + exp(-x))."""
    return torch.sigmoid(x)


@block("tanh")
def tanh(x: torch.Tensor) -> torch.Tensor:
    """Hyperbolic tangent."""
    return torch.tanh(x)


@block("leaky_relu")
def leaky_relu(x: torch.Tensor, *, negative_slope: float = 0.01) -> torch.Tensor:
    """Leaky ReLU: x where x > 0, else negative_slope * x."""
    return F.leaky_relu(x, negative_slope)


@block("step")
def step(x: torch.Tensor, *, threshold: float = 0.0) -> torch.Tensor:
    """Heaviside step as float: 1.0 where x > threshold, else 0.0 (zero gradient)."""
    return (x > threshold).to(x.dtype if x.is_floating_point() else torch.get_default_dtype())


ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "leaky_relu": F.leaky_relu,
    "step": step,
}
