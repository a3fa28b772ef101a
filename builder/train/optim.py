"""Optimiser and learning-rate schedule from the `optim` config.

The optimiser class comes from Hydra (`optim.optimizer._target_` with `_partial_: true`); we call it with
two parameter groups: matrices (decayed) and everything else (not decayed). torch's Adam and AdamW run fused
(one kernel for all parameters instead of a Python loop over them) unless the config says `fused` or `foreach`
or training runs under mixed precision.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn

from builder.errors import ConfigError

# Modules whose weights are never decayed, whatever their shape: shrinking an embedding table or a norm's
# gain towards zero is not a useful prior.
NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.RMSNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """[decayed, not decayed]; decayed = dim >= 2 and not owned by an embedding or a norm module.

    A tied parameter (say, a token embedding shared with the output layer) is listed once, and it is not
    decayed if any of its owners is an embedding.
    """
    params: dict[int, nn.Parameter] = {}
    names: dict[int, str] = {}
    exempt: set[int] = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            params.setdefault(id(p), p)
            names.setdefault(id(p), f"{mname}.{pname}" if mname else pname)
            if isinstance(module, NO_DECAY_MODULES) or p.dim() < 2:
                exempt.add(id(p))
    decay = [i for i in params if i not in exempt]
    no_decay = [i for i in params if i in exempt]
    return [
        {"params": [params[i] for i in decay], "names": [names[i] for i in decay], "weight_decay": weight_decay},
        {"params": [params[i] for i in no_decay], "names": [names[i] for i in no_decay], "weight_decay": 0.0},
    ]


class WarmupCosine:
    """LR multiplier at optimizer step s: linear warmup over `warmup_steps`, cosine from 1 down to
    `min_ratio` at `decay_steps`, then flat at `min_ratio`.

    A class, not a closure: LambdaLR saves a callable object's attributes (plain numbers here) in its state,
    which keeps checkpoints loadable with torch.load(weights_only=True).
    """

    def __init__(self, warmup_steps: int, decay_steps: int, min_ratio: float):
        self.warmup_steps, self.decay_steps, self.min_ratio = int(warmup_steps), int(decay_steps), float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if step >= self.decay_steps:
            return self.min_ratio
        progress = (step - self.warmup_steps) / max(1, self.decay_steps - self.warmup_steps)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class InverseSqrt:
    """The 2017 paper's schedule as a multiplier of `lr`: linear warmup to 1 at `warmup_steps`, then
    sqrt(warmup_steps / step). (The paper's d_model**-0.5 factor is the choice of `lr`.)"""

    def __init__(self, warmup_steps: int):
        self.warmup_steps = max(1, int(warmup_steps))

    def __call__(self, step: int) -> float:
        s = step + 1
        return min(s / self.warmup_steps, (self.warmup_steps / s) ** 0.5)


SCHEDULES = ("cosine", "inverse_sqrt")
FUSABLE = (torch.optim.Adam, torch.optim.AdamW)


def fused_default(make: Any, groups: list[dict[str, Any]]) -> dict[str, Any]:
    """{"fused": True} for torch's Adam and AdamW left to their defaults, when every parameter is a plain
    floating-point tensor on the CPU or a GPU (sharded parameters keep torch's own choice); else {}. On the CPU
    the default is a loop over the parameters in Python; the fused kernel gives the same steps within float
    rounding."""
    func, given = getattr(make, "func", None), getattr(make, "keywords", {})
    if func not in FUSABLE or "fused" in given or "foreach" in given or given.get("differentiable"):
        return {}
    params = [p for g in groups for p in g["params"]]
    plain = all(type(p) is nn.Parameter and p.is_floating_point() and p.device.type in ("cpu", "cuda")
                for p in params)
    return {"fused": True} if params and plain else {}


def build_optimizer(model: nn.Module, optim_cfg: dict[str, Any], total_steps: int,
                    fuse: bool = True) -> tuple[Any, Any]:
    """(optimizer, LambdaLR) for `model`; `total_steps` (optimizer steps) is the default decay length; `fuse`
    allows the fused Adam/AdamW default."""
    try:
        make = instantiate(optim_cfg["optimizer"], _convert_="all")  # lists stay lists: checkpoints hold plain data
    except InstantiationException as e:
        raise ConfigError(f"optim.optimizer._target_: {str(e).splitlines()[0]}") from None
    groups = param_groups(model, float(optim_cfg.get("weight_decay", 0.0)))
    for g in groups:
        g.pop("names")  # kept for inspection only; optimizers store unknown group keys in their state
    lr = float(optim_cfg["lr"])
    groups = [g for g in groups if g["params"]]
    try:
        optimizer = make(groups, lr=lr, **(fused_default(make, groups) if fuse else {}))
    except Exception as e:  # noqa: BLE001 - the optimiser refusing its arguments: one line, keyed
        raise ConfigError(f"optim.optimizer: {optim_cfg['optimizer'].get('_target_')} refused its arguments: "
                          f"{str(e).splitlines()[0]}") from None
    decay_steps = optim_cfg.get("decay_steps") or total_steps
    min_ratio = float(optim_cfg.get("min_lr", 0.0)) / lr
    if optim_cfg.get("schedule", "cosine") == "inverse_sqrt":
        schedule: Any = InverseSqrt(int(optim_cfg.get("warmup_steps", 0)))
    else:
        schedule = WarmupCosine(int(optim_cfg.get("warmup_steps", 0)), int(decay_steps), min_ratio)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
