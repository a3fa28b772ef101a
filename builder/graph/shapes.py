"""Shape inference on the meta device: every node is built and run on tensors that have shapes but no data,
so a mismatch is reported (with the node's config path and its input shapes) before any weight exists."""
from __future__ import annotations

import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from builder.errors import ConfigError
from builder.graph.assemble import MISSING, Graph, make_block, tie_weights
from builder.graph.spec import ModelSpec, NodeSpec

DTYPES = {"float": torch.float32, "long": torch.long, "bool": torch.bool}
DEFAULT_SIZES = {"batch": 2, "B": 2}
DEFAULT_SIZE = 8


@dataclass
class NodeInfo:
    name: str  # qualified: "layers.0.attn"
    path: str  # config path
    block: str
    shape: tuple[int, ...] | None
    params: int  # parameters owned by this node (tied ones are counted at their owner)


def example_sizes(spec: ModelSpec, overrides: dict[str, int] | None = None) -> dict[str, int]:
    sizes = {}
    for inp in spec.inputs.values():
        for d in inp.shape:
            if isinstance(d, str):
                sizes[d] = (overrides or {}).get(d, spec.dims.get(d, DEFAULT_SIZES.get(d, DEFAULT_SIZE)))
    return sizes


def infer_shapes(spec: ModelSpec, sizes: dict[str, int] | None = None, quick: bool = False) -> list[NodeInfo]:
    """Build the model on the meta device and run it through the executor (Graph.walk); raise ConfigError
    listing every problem found (a block refusing its arguments, a tie, a shape or dtype mismatch).

    `quick` is for processes that only check and exit (builder-plan): see `_without_dynamo`."""
    if quick:
        with _without_dynamo():
            return infer_shapes(spec, sizes)
    sizes = example_sizes(spec, sizes)
    problems: list[str] = []
    reported: set[str] = set()

    def report(path: str, message: str) -> None:
        if path not in reported:  # copies of a repeat fail alike: say it once
            reported.add(path)
            problems.append(f"{path}: {message}")

    def make(node: NodeSpec) -> torch.nn.Module:
        # Modules are made on the meta device; their forward runs outside that context manager, whose
        # per-op interception would route meta ops through slow Python reference kernels.
        try:
            with torch.device("meta"), _skip_init():
                return make_block(node)
        except Exception as e:  # noqa: BLE001 - a block refusing its arguments
            report(node.path, f"{node.block} `{node.name}`: {str(e).splitlines()[0]}")
            return Failed()

    graph = Graph(spec.graph, make)
    tie_weights(graph, spec.graph, lambda node, message: report(f"{node.path}.tie", message))
    infos: list[NodeInfo] = []
    counted: set[int] = set()

    def visit(qualified: str, node: NodeSpec, module: torch.nn.Module, inputs: dict[str, Any]) -> Any:
        if isinstance(module, Failed):
            return MISSING
        try:
            out = module(**inputs)
        except Exception as e:  # noqa: BLE001 - any failure here is a shape or dtype problem of this node
            report(node.path, f"{node.block} `{node.name}`: {_explain(node, inputs, e)}")
            return MISSING
        if not isinstance(out, torch.Tensor):
            report(node.path, f"{node.block} `{node.name}`: returned {type(out).__name__}, not a tensor")
            return MISSING
        params = sum(p.numel() for p in module.parameters() if id(p) not in counted)  # a tied one at its owner
        counted.update(id(p) for p in module.parameters())
        infos.append(NodeInfo(qualified, node.path, node.block, tuple(out.shape), params))
        return out

    env = {n: torch.empty([sizes[d] if isinstance(d, str) else d for d in s.shape], dtype=DTYPES[s.dtype],
                          device="meta") for n, s in spec.inputs.items()}
    graph.walk(env, visit)
    if problems:
        raise ConfigError(problems)
    return infos


class Failed(torch.nn.Module):
    """Stands in for a block that could not be built (already reported); nodes reading it are skipped."""


@contextmanager
def _without_dynamo():
    """Torch's Python meta kernels import torch._dynamo (about a second) on first use only to mark
    themselves as not-to-be-compiled. A process that never compiles can skip that import. Not for
    processes that go on to torch.compile: the marks made here would stay."""
    if "torch._dynamo" in sys.modules:
        yield
        return
    stub = types.ModuleType("torch._dynamo")
    stub.disable = lambda fn, recursive=True, wrapping=True: fn
    sys.modules["torch._dynamo"] = stub
    try:
        yield
    finally:
        del sys.modules["torch._dynamo"]
        torch.__dict__.pop("_dynamo", None)


@contextmanager
def _skip_init():
    """Random initialisation means nothing on the meta device, and its first call there costs a second
    of imports: skip it while checking shapes."""
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *a, **k: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.nn.init, n, fn)


def _explain(node: NodeSpec, inputs: dict[str, Any], error: Exception) -> str:
    tensors = {p: t for p, t in inputs.items() if isinstance(t, torch.Tensor)}
    described = ", ".join(f"{p} {tuple(t.shape)}" for p, t in tensors.items())
    float_dims = [t.shape[-1] for t in tensors.values() if t.dim() > 0 and t.is_floating_point()]
    if len(float_dims) >= 2 and len(set(float_dims)) > 1:
        return f"inputs have last dimension {' and '.join(str(d) for d in float_dims)} ({described})"
    for arg in ("in_features", "dim"):
        want = node.args.get(arg)
        first = next(iter(tensors.values()), None)
        if isinstance(want, int) and first is not None and first.is_floating_point() and first.dim() and first.shape[-1] != want:
            return f"input has last dimension {first.shape[-1]} but {arg} = {want} (input {described})"
    return f"{str(error).splitlines()[0]} (inputs: {described})"


def total_params(infos: list[NodeInfo]) -> int:
    return sum(i.params for i in infos)


def human(n: float) -> str:
    """124439808 -> '124.44M'."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))
