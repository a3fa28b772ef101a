"""LoRA adapters (Hu et al., 2021), applied to a built model the way builder/graph/fast.py applies its tricks:
the blocks stay as they are.

`apply(model, cfg)` (cfg: the `adapters` config, conf/adapters/lora.yaml) gives every linear layer inside the
nodes `cfg["targets"]` names a low-rank update: y = x W^T + b + (alpha / rank) * dropout(x) A^T B^T, with A
(rank, in) drawn like a linear layer's weight and B (out, rank) zero, so the adapted model starts as the model.
A target is a dotted name with `*` standing for one name part: `layers.*.attn` (every linear layer of each
layer's attention node), `layers.*.mlp.fc1` (one sub-layer), `head`. Every other parameter is frozen. The
adapter's parameters are `lora_a` and `lora_b` beside the layer's own, so the base weights keep their names.

The layer's class becomes a subclass of its class (fast.py's, when build_model applied it) whose forward adds
the update to the layer's own forward: adapters go on after fast.py. `merge(model)` folds the updates into the
weights and gives the layers their classes back.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from builder.errors import ConfigError
from builder.graph.assemble import GraphModel, block_modules

KEYS = ("lora_a", "lora_b")


class LoRA:
    """Mixed in front of a linear layer's class: its forward plus the low-rank update."""

    base_class: type = nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)  # (..., out_features)
        params = self._parameters
        h = F.dropout(x, self.lora_dropout, self.training) if self.lora_dropout else x
        return out + F.linear(F.linear(h, params["lora_a"]), params["lora_b"]) * self.lora_scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lora_rank={self.lora_a.shape[0]}, lora_scale={self.lora_scale:g}"


_classes: dict[type, type] = {}


def enabled(section: Any) -> bool:
    """Whether an `adapters` config section asks for adapters."""
    return isinstance(section, dict) and section.get("name", "none") != "none"


def pattern(target: str) -> re.Pattern:
    return re.compile("^" + re.escape(target).replace(r"\*", r"[^.]*") + "$")


def _shown(names: list[str]) -> str:
    return ", ".join(dict.fromkeys(re.sub(r"\.\d+(?=\.|$)", ".*", n) for n in names))


def targets(model: nn.Module, cfg: dict[str, Any]) -> dict[str, nn.Linear]:
    """The linear layers the targets name, by qualified name ("layers.0.attn.q"); one line per target that
    matches nothing, holds no linear layer, or names a layer whose weight another node shares (tie:)."""
    modules = dict(model.graph.named_modules())
    owners: dict[int, int] = {}
    for module in modules.values():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    found: dict[str, nn.Linear] = {}
    problems = []
    for i, target in enumerate(cfg.get("targets") or []):
        rx = pattern(str(target))
        named = [n for n in modules if n and rx.match(n)]
        layers = {n: m for n, m in modules.items() if isinstance(m, nn.Linear)
                  and any(n == x or n.startswith(x + ".") for x in named)}
        where = f"adapters.targets[{i}]: '{target}'"
        if not named:
            problems.append(f"{where} names no node or layer of the model; its nodes: "
                            f"{_shown(list(block_modules(model.graph, model.spec.graph)))}")
        elif not layers:
            problems.append(f"{where} holds no linear layer ({_shown(named)})")
        for name, layer in layers.items():
            if owners.get(id(layer.weight), 0) > 1:
                problems.append(f"{where}: {name} shares its weight with another node (tie:), so its update "
                                f"could not be merged into one matrix; leave it out of the targets")
            found[name] = layer
    if not cfg.get("targets"):
        problems.append("adapters.targets: empty; name the nodes whose linear layers get adapters, such as "
                        "[layers.*.attn]")
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return found


def apply(model: nn.Module, cfg: dict[str, Any]) -> nn.Module:
    """Adapters on the target layers of `model` (in place; returned), everything else frozen."""
    if not enabled(cfg):
        return model
    layers = targets(model, cfg)
    rank, alpha = int(cfg["rank"]), float(cfg["alpha"])
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in layers.values():
        w = layer.weight
        a = torch.empty(rank, layer.in_features, dtype=w.dtype, device=w.device)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # as nn.Linear draws its weight
        layer.register_parameter("lora_a", nn.Parameter(a))  # (rank, in)
        layer.register_parameter("lora_b", nn.Parameter(torch.zeros(layer.out_features, rank, dtype=w.dtype,
                                                                    device=w.device)))  # (out, rank)
        layer.lora_scale, layer.lora_dropout = alpha / rank, float(cfg.get("dropout") or 0.0)
        cls = type(layer)
        if cls not in _classes:
            _classes[cls] = type(cls.__name__, (LoRA, cls), {"__module__": cls.__module__,
                                                             "__qualname__": cls.__qualname__, "base_class": cls})
        layer.__class__ = _classes[cls]
    return model


def adapted(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, LoRA)]


@torch.no_grad()
def merge(model: nn.Module) -> nn.Module:
    """W + (alpha / rank) B A into each adapted layer's weight, the adapters removed (in place; returned)."""
    for layer in adapted(model):
        a, b = layer.lora_a, layer.lora_b
        layer.weight.add_((b.double() @ a.double() * layer.lora_scale).to(layer.weight.dtype))
        del layer._parameters["lora_a"], layer._parameters["lora_b"]
        layer.__class__ = layer.base_class
    return model


def merged_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s state dict with the adapters folded into the weights (the model itself unchanged)."""
    state = {k: v for k, v in model.state_dict().items() if not is_adapter_key(k)}
    for name, layer in model.named_modules():
        if isinstance(layer, LoRA):
            key = f"{name}.weight" if name else "weight"
            update = layer.lora_b.detach().double() @ layer.lora_a.detach().double() * layer.lora_scale
            state[key] = (layer.weight.detach().double() + update).to(layer.weight.dtype)
    return state


def is_adapter_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in KEYS


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, each shared tensor counted once."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in model.parameters()}
    return sum(p.numel() for p in seen.values() if p.requires_grad), sum(p.numel() for p in seen.values())


def describe(model: nn.Module, cfg: dict[str, Any] | None = None) -> str:
    """`812,160 parameters, 16,384 trainable (2.0%): LoRA rank 8 on 8 linear layers (layers.*.attn)`."""
    trainable, total = parameter_counts(model)
    line = f"{total:,} parameters, {trainable:,} trainable ({100 * trainable / max(total, 1):.3g}%)"
    layers = adapted(model)
    if layers and cfg:
        line += (f": LoRA rank {cfg['rank']} on {len(layers)} linear layer{'s' if len(layers) != 1 else ''} "
                 f"({', '.join(map(str, cfg['targets']))})")
    return line


def plan_counts(spec: Any, cfg: dict[str, Any]) -> tuple[int, int]:
    """(adapter parameters, adapted layers) of a model spec, from its shapes alone (built on the meta device)."""
    with torch.device("meta"):
        model = GraphModel(spec)
    layers = targets(model, cfg)
    rank = int(cfg["rank"])
    return sum(rank * (m.in_features + m.out_features) for m in layers.values()), len(layers)
