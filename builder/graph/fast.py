"""Speed tricks, applied to a built model so that the blocks and the executor read as plain PyTorch.

`apply(model)` changes the classes of a model's modules in place (same parameters, state dict and results):

- linear layers (nn.Linear and blocks built on it) run on oneDNN on the CPU (builder/graph/cpu_linear.py);
- layer and RMS norms read their parameters without nn.Module.__getattr__ and call torch's kernels directly;
- a block's linear layers that read one input (named in its `same_input`, computed by its `project`) run as one
  product while decoding (builder/graph/linear_group.py);
- decoding steps skip nn.Module.__call__'s two Python layers for modules that no hook, compile or tracer
  needs to see: the graph's nodes, and the linear layers and norms inside blocks, which a decoding step calls
  dozens of times per token, most of a small model's time.

build_model applies it; BUILDER_KERNELS=off in the environment leaves every model as built (for comparisons,
or to rule the tricks out when something looks wrong).
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_globals

from builder.graph.assemble import Graph, GraphModel, Repeat
from builder.graph import cpu_linear
from builder.graph.cpu_linear import DECODE_ROWS, OneDNNLinear
from builder.graph.linear_group import group_product

SWITCH = "BUILDER_KERNELS"
SPLIT_MIN_MODEL_MB = 8


def enabled() -> bool:
    value = os.environ.get(SWITCH, "on")
    if value not in ("on", "off"):
        raise ValueError(f"{SWITCH}={value!r}: expected on or off")
    return value == "on"


_GLOBAL_HOOKS = (module_globals._global_forward_hooks, module_globals._global_forward_pre_hooks,
                 module_globals._global_backward_hooks, module_globals._global_backward_pre_hooks)
_grad_enabled, _tracing_state = torch.is_grad_enabled, torch._C._get_tracing_state


def _any_global_hooks() -> bool:
    """Whether a hook registered for every module, recording gradients (backward hooks) or a tracer needs
    nn.Module.__call__. (torch registers global hooks into these same dicts, so holding them is enough.)"""
    forward, pre, backward, backward_pre = _GLOBAL_HOOKS
    return bool(forward or pre or backward or backward_pre or _grad_enabled() or _tracing_state())


def _hooked(module: nn.Module) -> bool:
    """Whether calling `module` needs nn.Module.__call__: hooks of its own or everywhere, or `module.compile()`."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._compiled_call_impl is not None
                or _any_global_hooks())


class DirectCall:
    """Calls forward itself while no gradient is recorded and nothing else needs nn.Module.__call__."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        forward, pre, backward, backward_pre = _GLOBAL_HOOKS  # _hooked(self), inlined: called dozens of times a token
        if (self._forward_hooks or self._forward_pre_hooks or self._compiled_call_impl is not None or forward or pre
                or backward or backward_pre or _grad_enabled() or _tracing_state()):
            return nn.Module.__call__(self, *args, **kwargs)
        return self.forward(*args, **kwargs)


class FastLinear(DirectCall, OneDNNLinear):
    pass


class FastLayerNorm(DirectCall):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = self._parameters  # read directly, and torch.layer_norm without F's wrapper: per-token calls
        return torch.layer_norm(x, self.normalized_shape, params["weight"], params["bias"], self.eps)  # (..., dim)


class FastRMSNorm(DirectCall):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, d = self._parameters["weight"], x.shape[-1]
        if (x.numel() <= DECODE_ROWS * d and self.eps is not None and len(self.normalized_shape) == 1
                and not _grad_enabled()):
            # a decoding step's few rows: the layer norm of [x, -x], whose mean is 0 and variance mean(x^2), is
            # this RMS norm in one fused kernel, where torch.rms_norm runs five on the CPU (a 6-layer 384-wide
            # Llama decodes one prompt 5% faster; a 4-layer 128-wide one eight prompts 10%)
            y = torch.layer_norm(torch.cat([x, x.neg()], -1), (2 * d,), None, None, self.eps)[..., :d]  # (..., dim)
            return y if w is None else y * w
        return torch.rms_norm(x, self.normalized_shape, w, self.eps)  # (..., dim)


class LinearGroup:
    """For blocks whose `project(x)` gives the outputs of their layers `same_input` (a Llama layer's q, k, v)."""

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        layers = self._modules
        return group_product(self, [layers[name] for name in self.same_input], x) or super().project(x)

    def _apply(self, fn, recurse=True):  # .to(), .half(), ...: the copy belongs to the old weights
        self.__dict__.pop("_group", None)
        return super()._apply(fn, recurse)

    def __getstate__(self):  # pickling and deepcopy leave the copy behind
        state = super().__getstate__()
        state.pop("_group", None)
        return state


class FastGraph:
    def decode(self, env: dict[str, Any], state: Any) -> dict[str, Any]:
        hooks = _any_global_hooks()
        values, static_deps = state.values, self.static_deps if state.static else None  # None: nothing to keep
        for name, module, kind, sources, named in self.plan:
            if values and name in values:
                env[name] = values[name]
                continue
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
            if static_deps:
                deps = static_deps.get(name)
                if deps and deps <= state.static:
                    values[name] = env[name]
        return env


class FastRepeat:
    def forward(self, x: Any, outer: dict[str, Any], state: Any = None) -> Any:
        local = dict(outer)
        for graph in self:
            local[self.carry] = x
            x = (graph(local, state) if state is None or _hooked(graph) else graph.decode(local, state))[self.out]
        return x


class FastGraphModel:
    def forward(self, *args: Any, state: Any = None, **named: Any) -> Any:
        env = dict(zip(self.input_names, args), **named)
        env = self.graph(env, state) if state is None or _hooked(self.graph) else self.graph.decode(env, state)
        return self.outputs(env)


MIXINS = ((nn.Linear, FastLinear), (nn.LayerNorm, FastLayerNorm), (nn.RMSNorm, FastRMSNorm), (Graph, FastGraph),
          (Repeat, FastRepeat), (GraphModel, FastGraphModel))
_classes: dict[tuple[type, type], type] = {}


def apply(model: nn.Module) -> nn.Module:
    """The tricks above on every module of `model` they apply to (in place; `model` is returned)."""
    if not enabled():
        return model
    for module in model.modules():
        cls = type(module)
        mixin = next((m for base, m in MIXINS if isinstance(module, base)), None)
        if mixin is None and getattr(cls, "same_input", None) and hasattr(cls, "project"):
            mixin = LinearGroup
        if mixin is None or issubclass(cls, mixin):
            continue
        if (mixin, cls) not in _classes:  # the same name and module as the class it speeds up
            _classes[mixin, cls] = type(cls.__name__, (mixin, cls), {"__module__": cls.__module__,
                                                                     "__qualname__": cls.__qualname__})
        module.__class__ = _classes[mixin, cls]
    limit_columns(model)
    return model


def limit_columns(model: nn.Module) -> None:
    """Decoding reads column-stored copies of the linear weights (cpu_linear.OneDNNLinear) and side-by-side
    copies of layers that read one input (linear_group.py), which cost their memory once more: worth it while
    the weights are small beside the process itself, not for a 124M model, whose copy would nearly double what
    generation holds. Above BUILDER_DECODE_COPY_MB (default 128) of linear
    weights the copies are not made and decoding reads the weights as they are.

    Where aten serves, decoding splits each product between threads (cpu_linear.split_product) in models with at
    least SPLIT_MIN_MODEL_MB of linear weights: those are read from memory, which two threads read faster than
    one, while a smaller model's weights stay in the caches and one thread per product is quicker (4-layer
    128-wide Llama, 3 MB: 1.50x transformers unsplit, 1.22x split; 6-layer 384-wide, 38 MB: 1.26x -> 1.5x).
    Grouped layers (linear_group.py) follow: the 38 MB Llama decodes one prompt 1.10x faster grouped, the 3 MB
    one 0.91x, since a product on one thread costs as much whole as in parts."""
    limit = float(os.environ.get("BUILDER_DECODE_COPY_MB", "128")) * 2**20
    linears = [m for m in model.modules() if isinstance(m, OneDNNLinear)]
    size = sum(m.weight.numel() * m.weight.element_size() for m in {id(m.weight): m for m in linears}.values())
    split = size >= SPLIT_MIN_MODEL_MB * 2**20
    for m in linears:
        m.__dict__["_columns_allowed"], m.__dict__["_split_allowed"] = size <= limit, split
    for m in model.modules():
        if isinstance(m, LinearGroup):  # one product saves oneDNN's fixed cost per call, and on aten's path the
            # split's, while a small model's products on one thread each cost the same grouped or not
            m.__dict__["_group_allowed"] = size <= limit and (cpu_linear.ENABLED or split)
            m.__dict__["_split_allowed"] = split
