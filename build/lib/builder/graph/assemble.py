"""Assembly: a validated graph spec -> nn.Modules that run the nodes in order, with weight tying."""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_globals

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


def make_block(node: NodeSpec) -> nn.Module:
    obj = registry.get(node.block).load()
    return obj(**node.args) if inspect.isclass(obj) else FunctionBlock(obj, dict(node.args))


class Graph(nn.ModuleDict):
    """Runs the nodes of one (sub)graph in order; values live in a dict keyed by node name."""

    def __init__(self, spec: GraphSpec):
        super().__init__()
        self.static_deps: dict[str, frozenset[str]] = {}  # filled for the top-level graph by GraphModel
        # (name, module, kind, sources in port order or None, (port, source) pairs); modules are looked up
        # once here, and inputs given in port order are passed positionally: the per-node cost is what is
        # left of Python overhead in a small model's training step
        self.plan: list[tuple[str, nn.Module, str, tuple[str, ...] | None, tuple[tuple[str, str], ...]]] = []
        for name in spec.order:
            node = spec.nodes[name]
            self[name] = Repeat(node) if node.body is not None else make_block(node)
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
        hooks = _any_global_hooks()
        for name, module, kind, sources, named in self.plan:
            if name in state.values:
                env[name] = state.values[name]
                continue
            # nn.Module.__call__ adds two Python calls before reaching forward when there are no hooks; a
            # decoding step makes dozens of these calls per token, so they are skipped when no hook would run
            call = (module if hooks or module._forward_hooks or module._forward_pre_hooks
                    or module._compiled_call_impl is not None else module.forward)  # _hooked(module), inlined
            if kind == "repeat":
                env[name] = call(env[sources[0]], env, state)
            elif sources is not None:
                args = (env[sources[0]],) if len(sources) == 1 else [env[s] for s in sources]
                env[name] = call(*args, state=state) if kind == "state" else call(*args)
            else:
                kwargs = {port: env[s] for port, s in named}
                env[name] = call(**kwargs, state=state) if kind == "state" else call(**kwargs)
            deps = self.static_deps.get(name)
            if deps and deps <= state.static:
                state.values[name] = env[name]
        return env


def _any_global_hooks() -> bool:
    """Whether a hook registered for every module, recording gradients (backward hooks) or a tracer needs
    nn.Module.__call__ (see Graph.decode)."""
    return bool(module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks
                or module_globals._global_backward_hooks or module_globals._global_backward_pre_hooks
                or torch.is_grad_enabled() or torch._C._get_tracing_state())


def _hooked(module: nn.Module) -> bool:
    """Whether calling `module` needs nn.Module.__call__: hooks of its own or everywhere, or `module.compile()`."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._compiled_call_impl is not None
                or _any_global_hooks())


class Repeat(nn.ModuleList):
    """N copies of a body graph, each with its own weights; copy i's `out` is copy i+1's input.

    Every copy sees the enclosing graph's values (for example the encoder output) by name."""

    def __init__(self, node: NodeSpec):
        super().__init__([Graph(node.body) for _ in range(node.repeat)])
        self.carry, self.out = node.carry, node.out

    def forward(self, x: Any, outer: dict[str, Any], state: Any = None) -> Any:
        local = dict(outer)  # each copy recomputes every body node before reading it, so one dict serves all
        for graph in self:
            local[self.carry] = x
            x = (graph(local, state) if state is None or _hooked(graph) else graph.decode(local, state))[self.out]
        return x


class GraphModel(nn.Module):
    """A model assembled from a block graph: `model(*inputs)` -> tensor, or a dict for several outputs."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.input_names = list(spec.inputs)
        self.output_names = list(spec.outputs)
        self.input_specs = {n: {"shape": s.shape, "dtype": s.dtype} for n, s in spec.inputs.items()}
        self.graph = Graph(spec.graph)
        self.graph.static_deps = input_dependencies(spec)
        tie_weights(self.graph, spec.graph)

    def forward(self, *args: Any, state: Any = None, **named: Any) -> Any:
        env = dict(zip(self.input_names, args), **named)
        env = self.graph(env, state) if state is None or _hooked(self.graph) else self.graph.decode(env, state)
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


def tie_weights(graph: Graph, spec: GraphSpec) -> None:
    """`tie: other` makes each parameter of this node that `other` also has, by name, the same tensor."""
    modules = block_modules(graph, spec)
    by_name = {}
    for qualified, (module, node) in modules.items():
        by_name.setdefault(node.name, module)
    for module, node in modules.values():
        if node.tie is None:
            continue
        theirs = dict(by_name[node.tie].named_parameters(recurse=False))
        for pname, mine in list(module.named_parameters(recurse=False)):
            if pname in theirs and theirs[pname].shape == mine.shape:
                setattr(module, pname, theirs[pname])
