"""Linear layers that read the same input, run as one product while decoding.

A Llama layer projects its input three times (q, k, v) and its feed-forward's input twice (gate, up): separate
layers, as checkpoints name them. A decoding step multiplies one row or a few by each weight, where the cost is
mostly the call and reading the weight, so one product over the weights side by side is quicker: a 6-layer
384-wide Llama decodes one prompt 1.10x faster, eight 1.07x, the same tokens (builder/graph/fast.py's
`LinearGroup` on blocks that name their groups in `same_input`).

The side-by-side weight is a copy, made on first use and again whenever a weight changes (an optimiser step,
load_state_dict, `.to()`), so it costs the group's weights once more: made only for models whose linear
weights fit fast.py's limit (BUILDER_DECODE_COPY_MB), the limit of cpu_linear's column-stored copies. Two rows
or more read it packed for oneDNN where aten serves the rest (cpu_linear.pack), a copy made on first use.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from builder.graph import cpu_linear
from builder.graph.cpu_linear import OneDNNLinear, decoding_rows, split_parts, split_product


def _key(layers: Sequence[nn.Module]) -> tuple | None:
    """What the copy is made from, every parameter's version and storage; None where a layer must run itself:
    hooked, compiled, or computing more than x W^T + b (an adapter such as LoRA)."""
    key = []
    for layer in layers:
        if (layer._forward_hooks or layer._forward_pre_hooks or layer._compiled_call_impl is not None
                or type(layer).forward is not OneDNNLinear.forward):
            return None
        key.extend(None if p is None else (p._version, p.data_ptr()) for p in layer._parameters.values())
    return tuple(key)


def _side_by_side(layers: Sequence[nn.Module], split: bool) -> tuple:
    """The weights (sum of outs, in) and biases concatenated, the split views, and each layer's width."""
    w = torch.cat([layer.weight.detach() for layer in layers])  # (sum of outs, in)
    biases = [layer.bias for layer in layers]
    b = None if all(x is None for x in biases) else torch.cat(
        [x.detach() if x is not None else w.new_zeros(layer.out_features) for x, layer in zip(biases, layers)])
    if cpu_linear.ENABLED:  # oneDNN reads a column-stored weight faster (cpu_linear.OneDNNLinear)
        return w.t().contiguous().t(), b, None, [layer.out_features for layer in layers]
    return w, b, split_parts(w) if split else None, [layer.out_features for layer in layers]


def group_product(owner: nn.Module, layers: Sequence[nn.Module], x: torch.Tensor) -> tuple | None:
    """Each of `layers`' outputs for x (..., in), from one product over their weights side by side; None where
    the layers should run one by one: gradients recorded, more than a few rows, not float32 on the CPU,
    compiling or tracing, a hooked or adapted layer, or a model above the copy limit."""
    if not owner.__dict__.get("_group_allowed") or not decoding_rows(x, x.shape[-1]):
        return None
    key = _key(layers)
    if key is None:
        return None
    group = owner.__dict__.get("_group")
    if group is None or group[0] != key:
        group = owner.__dict__["_group"] = [key, *_side_by_side(layers, owner.__dict__.get("_split_allowed")), None]
    _, w, b, parts, widths, packed = group
    if cpu_linear.ENABLED:
        y = cpu_linear._LINEAR_OP(x, w, b, "none", [], "")
    elif cpu_linear.PACKS and x.numel() > x.shape[-1]:  # several rows, as a layer's own (cpu_linear.pack)
        if packed is None:
            packed = group[5] = cpu_linear.pack(w)  # made on first use: one prompt at a time never needs it
        y = cpu_linear._LINEAR_OP(x, packed, b, "none", [], "")
    elif parts is not None:
        y = split_product(x, w, parts, b)
    else:
        y = F.linear(x, w, b)
    return y.split(widths, dim=-1)  # views of y (..., sum of outs)
