"""Follow one input through a built graph, node by node: every intermediate value, for teaching and debugging.

The graph executor runs the model node by node (Graph.walk) and each node's output is recorded: all values of
small tensors, summary statistics of large ones.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch

from builder.graph.assemble import GraphModel

SMALL = 64  # tensors with at most this many elements are shown whole


@dataclass
class Step:
    name: str  # qualified: "layers.0.attn"
    block: str
    shape: tuple[int, ...]
    values: list | None = None  # all values, for small tensors
    stats: dict[str, float] = field(default_factory=dict)  # mean, std, min, max, for large ones

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.name, "block": self.block, "shape": list(self.shape)}
        out.update({"values": self.values} if self.values is not None else {"stats": self.stats})
        return out


@torch.no_grad()
def trace(model: GraphModel, *args: Any, only: str | None = None, **named: Any) -> list[Step]:
    """Run `model` on one input and return its steps; `only` is a glob on node names ("layers.0.*")."""
    env = dict(zip(model.input_names, args), **named)
    steps = [_step(name, "input", value) for name, value in env.items()]

    def record(qualified: str, node: Any, module: torch.nn.Module, inputs: dict[str, Any]) -> Any:
        value = module(**inputs)
        steps.append(_step(qualified, node.block, value))
        return value
    model.graph.walk(env, record)
    if only:
        steps = [s for s in steps if fnmatch.fnmatch(s.name, only) or fnmatch.fnmatch(s.name.split(".")[-1], only)]
    return steps


def _step(name: str, block: str, value: Any) -> Step:
    t = torch.as_tensor(value).detach()
    step = Step(name, block, tuple(t.shape))
    if t.numel() <= SMALL:
        step.values = t.tolist()
    else:
        f = t.float()
        step.stats = {"mean": f.mean().item(), "std": f.std().item(), "min": f.min().item(), "max": f.max().item()}
    return step


def format_steps(steps: list[Step], digits: int = 4) -> str:
    """One line per node: name, block, shape, then the values (or mean/std/min/max)."""
    width = max((len(s.name) for s in steps), default=4)
    bwidth = max((len(s.block) for s in steps), default=5)
    lines = []
    for s in steps:
        shape = "(" + ", ".join(map(str, s.shape)) + ")"
        if s.values is not None:
            shown = _fmt(s.values, digits)
        else:
            shown = "  ".join(f"{k} {v:.{digits}g}" for k, v in s.stats.items())
        lines.append(f"{s.name:<{width}}  {s.block:<{bwidth}}  {shape:<14} {shown}")
    return "\n".join(lines)


def _fmt(values: Any, digits: int) -> str:
    if isinstance(values, list):
        return "[" + ", ".join(_fmt(v, digits) for v in values) + "]"
    if isinstance(values, bool):
        return str(values)
    if isinstance(values, int):
        return str(values)
    return f"{values:.{digits}g}"
