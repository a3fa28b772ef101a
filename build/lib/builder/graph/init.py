"""Weight initialisation chosen in the config.

    init:
      weights: normal          # normal | xavier_uniform | xavier_normal | torch (each block's own default)
      std: 0.02                # for normal
      scaled_residual: true    # GPT-2: residual projections get std / sqrt(their number)

A node may carry its own `init:` mapping, which overrides the model's for that node (and a repeat's body).
Linear and embedding weights follow the scheme, linear biases start at zero; other parameters keep
their block's own initialisation (layer norms start at scale 1, shift 0).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from builder.graph.assemble import GraphModel, block_modules
from builder.graph.spec import ModelSpec


@torch.no_grad()
def initialise(model: GraphModel, spec: ModelSpec) -> None:
    """Apply the config's scheme (validated with the rest of the structure in `validate.py`)."""
    base = dict(spec.init or {})
    modules = block_modules(model.graph, spec.graph)
    n_residual = sum(1 for m in model.modules() if getattr(m, "residual_projection", False)) or 1
    done: set[int] = set()
    for module, node in modules.values():
        settings = {**base, **(node.init or {})}
        if settings.get("weights", "torch") == "torch":
            continue
        for sub in module.modules():
            _init_module(sub, settings, n_residual, done)


def _init_module(m: nn.Module, settings: dict[str, Any], n_residual: int, done: set[int]) -> None:
    weight = getattr(m, "weight", None)
    if not isinstance(m, (nn.Linear, nn.Embedding)) or weight is None or id(weight) in done:
        return
    done.add(id(weight))
    scheme, std = settings["weights"], float(settings.get("std", 0.02))
    if scheme == "normal":
        if settings.get("scaled_residual") and getattr(m, "residual_projection", False):
            std /= math.sqrt(n_residual)
        nn.init.normal_(weight, 0.0, std)
    elif scheme == "xavier_uniform":
        nn.init.xavier_uniform_(weight)
    elif scheme == "xavier_normal":
        nn.init.xavier_normal_(weight)
    bias = getattr(m, "bias", None)
    if isinstance(bias, torch.Tensor) and id(bias) not in done:
        done.add(id(bias))
        nn.init.zeros_(bias)
