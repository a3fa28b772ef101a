"""Assembly: a validated graph spec -> nn.Modules that run the nodes in order, with weight tying."""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

from builder.graph import registry
from builder.graph.spec import GraphSpec, ModelSpec, NodeSpec


class FunctionBlock(nn.Module):
    """A function block with its arguments bound."""

    def __init__(self, fn: Any, kwargs: dict[str, Any]):
        super().__init__()
        self.fn, self.kwargs = fn, kwargs

    def forward(self, *args: Any, **ports: Any) -> Any:
        return self.fn(*args, **ports, **self.kwargs)

    def extra_repr(self) -> str:
        return f"{self.fn.__name__}, {self.kwargs}" if self.kwargs else self.fn.__name__


def make_block(node: NodeSpec, allocate: bool = False) -> nn.Module:
    """The node's module. A node with `tie:` is made on the meta device (unless `allocate`): the weights it
    shares are another node's, so a large tied LM head is never allocated and initialised only to be dropped;
    tie_weights gives it the shared tensors and makes whatever it does not share."""
    obj = registry.get(node.block).load()
    if not inspect.isclass(obj):
        return FunctionBlock(obj, dict(node.args))
    if node.tie is not None and not allocate:
        with torch.device("meta"):
            return obj(**node.args)
    return obj(**node.args)


MISSING = object()  # a value a visitor did not produce (walk): nodes that read it are skipped


class Graph(nn.ModuleDict):
    """The graph executor: runs the nodes of one (sub)graph in order, values in a dict keyed by node name.

    `forward` trains and evaluates, `decode` takes one incremental decoding step, and `walk` runs every node
    through a visitor, for the uses that look at each node: following values (trace), shapes on the meta
    device with every failure reported (shapes). Speed tricks that skip Python layers live apart, in
    builder/graph/fast.py, applied to a built model."""

    def __init__(self, spec: GraphSpec, make: Callable[[NodeSpec], nn.Module] = None):
        super().__init__()
        make = make or make_block
        self.spec = spec
        self.static_deps: dict[str, frozenset[str]] = {}  # filled for the top-level graph by GraphModel
        # (name, module, kind, sources in port order or None, (port, source) pairs); modules are looked up
        # once here, and inputs given in port order are passed positionally: the per-node cost is what is
        # left of Python overhead in a small model's training step
        self.plan: list[tuple[str, nn.Module, str, tuple[str, ...] | None, tuple[tuple[str, str], ...]]] = []
        for name in spec.order:
            node = spec.nodes[name]
            self[name] = Repeat(node, make) if node.body is not None else make(node)
            if node.body is not None:
                kind, ports = "repeat", ["in"]
            else:
                schema = registry.get(node.block)
                kind, ports = ("state" if schema.stateful else "plain"), [p.name for p in schema.ports]
            in_order = list(node.inputs) == ports[:len(node.inputs)]
            self.plan.append((name, self[name], kind, tuple(node.inputs.values()) if in_order else None,
                              tuple(node.inputs.items())))

    def forward(self, env: dict[str, Any], state: Any = None) -> dict[str, Any]:
        if state is not None:
            return self.decode(env, state)
        for name, module, kind, sources, named in self.plan:
            if kind == "repeat":
                env[name] = module(env[sources[0]], env)
            elif sources is not None:
                env[name] = module(env[sources[0]]) if len(sources) == 1 else module(*[env[s] for s in sources])
            else:
                env[name] = module(**{port: env[s] for port, s in named})
        return env

    def decode(self, env: dict[str, Any], state: Any) -> dict[str, Any]:
        """One incremental decoding step: stateful blocks get the state; nodes that depend only on inputs
        fixed while decoding (an encoder) are computed on the first step and reused."""
        for name, module, kind, _, named in self.plan:
            if name in state.values:
                env[name] = state.values[name]
                continue
            kwargs = {port: env[s] for port, s in named}
            if kind == "repeat":
                env[name] = module(kwargs["in"], env, state)
            else:
                env[name] = module(**kwargs, state=state) if kind == "state" else module(**kwargs)
            deps = self.static_deps.get(name)
            if deps and deps <= state.static:
                state.values[name] = env[name]
        return env

    def walk(self, env: dict[str, Any], visit: Visit, prefix: str = "") -> dict[str, Any]:
        """Run every block node as visit(qualified name, node spec, module, inputs by port) -> value; the
        visitor calls module(**inputs) and may record, catch or return MISSING, and a node reading a MISSING
        value is skipped."""
        for name, module, kind, _, named in self.plan:
            if any(s not in env for _, s in named):
                continue  # an upstream node produced nothing
            kwargs = {port: env[s] for port, s in named}
            if kind == "repeat":
                value = module.walk(kwargs["in"], env, visit, f"{prefix}{name}.")
            else:
                value = visit(prefix + name, self.spec.nodes[name], module, kwargs)
            if value is not MISSING:
                env[name] = value
        return env


Visit = Callable[[str, NodeSpec, nn.Module, dict[str, Any]], Any]


class Repeat(nn.ModuleList):
    """N copies of a body graph, each with its own weights; copy i's `out` is copy i+1's input.

    Every copy sees the enclosing graph's values (for example the encoder output) by name."""

    def __init__(self, node: NodeSpec, make: Callable[[NodeSpec], nn.Module] = None):
        super().__init__([Graph(node.body, make) for _ in range(node.repeat)])
        self.carry, self.out = node.carry, node.out

    def forward(self, x: Any, outer: dict[str, Any], state: Any = None) -> Any:
        local = dict(outer)  # each copy recomputes every body node before reading it, so one dict serves all
        for graph in self:
            local[self.carry] = x
            x = graph(local, state)[self.out]
        return x

    def walk(self, x: Any, outer: dict[str, Any], visit: Visit, prefix: str) -> Any:
        local = dict(outer)
        for i, graph in enumerate(self):
            local[self.carry] = x
            x = graph.walk(local, visit, f"{prefix}{i}.").get(self.out, MISSING)
            if x is MISSING:
                break
            local.pop(self.out)
        return x


class GraphModel(nn.Module):
    """A model assembled from a block graph: `model(*inputs)` -> tensor, or a dict for several outputs."""

    def __init__(self, spec: ModelSpec, make: Callable[[NodeSpec], nn.Module] = None):
        super().__init__()
        self.spec = spec
        self.input_names = list(spec.inputs)
        self.output_names = list(spec.outputs)
        self.input_specs = {n: {"shape": s.shape, "dtype": s.dtype} for n, s in spec.inputs.items()}
        self.graph = Graph(spec.graph, make)
        self.graph.static_deps = input_dependencies(spec)
        tie_weights(self.graph, spec.graph)

    def forward(self, *args: Any, state: Any = None, **named: Any) -> Any:
        env = self.graph(dict(zip(self.input_names, args), **named), state)
        return self.outputs(env)

    def outputs(self, env: dict[str, Any]) -> Any:
        if len(self.output_names) == 1:
            return env[self.spec.outputs[self.output_names[0]]]
        return {out: env[node] for out, node in self.spec.outputs.items()}


def input_dependencies(spec: ModelSpec) -> dict[str, frozenset[str]]:
    """For each top-level node, the model inputs it depends on (decoding caches nodes of fixed inputs)."""
    deps: dict[str, frozenset[str]] = {}
    for name in spec.graph.order:
        found: set[str] = set()
        for src in spec.graph.nodes[name].sources():
            found |= {src} if src in spec.inputs else deps.get(src, set())
        deps[name] = frozenset(found)
    return deps


def block_modules(graph: Graph, spec: GraphSpec, prefix: str = "") -> dict[str, tuple[nn.Module, NodeSpec]]:
    """Every block node's module by qualified name ("layers.0.attn"), in execution order."""
    found: dict[str, tuple[nn.Module, NodeSpec]] = {}
    for name in spec.order:
        node = spec.nodes[name]
        if node.body is not None:
            for i, copy in enumerate(graph[name]):
                found.update(block_modules(copy, node.body, f"{prefix}{name}.{i}."))
        else:
            found[prefix + name] = (graph[name], node)
    return found


def tie_weights(graph: Graph, spec: GraphSpec, report: Callable[[NodeSpec, str], None] | None = None) -> None:
    """`tie: other` makes each parameter of this node that `other` also has, by name, the same tensor;
    `report(node, problem)` hears of a tie that shares nothing or a parameter of another shape."""
    modules = block_modules(graph, spec)
    by_name = {}
    for qualified, (module, node) in modules.items():
        by_name.setdefault(node.name, module)
    for module, node in modules.values():
        if node.tie is None:
            continue
        if node.tie not in by_name:
            report and report(node, f"node '{node.tie}' must come before `{node.name}` to share its weights")
            continue
        theirs = dict(by_name[node.tie].named_parameters(recurse=False))
        mine = dict(module.named_parameters(recurse=False))
        for pname, param in mine.items():
            if pname in theirs and theirs[pname].shape != param.shape:
                report and report(node, f"cannot share `{pname}`: {tuple(param.shape)} here, "
                                        f"{tuple(theirs[pname].shape)} in '{node.tie}'")
            elif pname in theirs:
                setattr(module, pname, theirs[pname])
        if report and not set(mine) & set(theirs):
            report(node, f"'{node.tie}' has no parameter with a name this node has "
                         f"(this node: {', '.join(mine) or 'none'})")
        _make_unshared(module, node, next(iter(theirs.values()), None))


def _make_unshared(module: nn.Module, node: NodeSpec, shared: torch.Tensor | None) -> None:
    """A tied module was made on the meta device (make_block): the tensors it does not share (a bias, a
    buffer) are taken from a copy of the block made for real, so they start as the block starts them."""
    device = shared.device if shared is not None else torch.get_default_device()
    if device.type == "meta":  # shape inference: everything stays on the meta device
        return
    # parameters, buffers and plain tensor attributes (tables a block computes when it is made)
    left = [(prefix, sub, table, key) for prefix, sub in module.named_modules()
            for table in (sub._parameters, sub._buffers, sub.__dict__)
            for key, t in table.items() if isinstance(t, torch.Tensor) and t.is_meta]
    if not left:
        return
    with torch.device(device):
        real = make_block(node, allocate=True)
    for prefix, sub, table, key in left:
        source = real.get_submodule(prefix)
        source_table = source._parameters if table is sub._parameters else (
            source._buffers if table is sub._buffers else source.__dict__)
        table[key] = source_table[key]
