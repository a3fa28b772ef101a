"""ONNX export of any graph model (builder-export format=onnx): `model.onnx` with dynamic batch and sequence axes.

The exported graph is the whole GraphModel, every input of the model config an input of the graph under its own
name (a translation Transformer: src, src_pad, tgt, tgt_pad -> logits, one graph; decoding runs it once per
token), every output an output. A dimension named in the config (`batch`, `seq`, `src_len`) is a dynamic axis;
a number is fixed. The model is exported as plain PyTorch: a copy built without the speed tricks of
builder/graph/fast.py (no oneDNN op reaches the file), adapters merged, and a few modules given forms that trace
to standard ONNX operators for every length (EXPORT_FORMS): attention as matmul and softmax with its masks
built from the sequence lengths, rotary angles computed from the positions rather than read from a cached table,
RMS norms spelt out (opset 17 has no RMSNormalization).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from blocks.attention import Attention, build_mask, merge_heads
from blocks.rope import Rotary
from builder.contract import context_length, vocabulary
from builder.errors import ConfigError
from builder.graph import adapters
from builder.graph.assemble import GraphModel

FILE = "model.onnx"
OPSET = 17
EXAMPLE = {"batch": 2, "other": 7}  # traced sizes: batch 2, every other named dimension 7 (or its table's)


class ExportAttention:
    """Attention as explicit matmul, mask and softmax; a causal mask (with its sliding window) made from the
    traced lengths, so that one graph serves every sequence length."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, is_causal: bool = False):
        T, S = q.shape[-2], k.shape[-2]
        if is_causal:
            mask = build_mask(None, T, S, True, q.device, getattr(self, "window", None))  # (T, S)
        groups = q.shape[1] // k.shape[1]
        if groups > 1:
            k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))  # (B, H, S, hd)
        scores = q @ k.transpose(-2, -1) / float(q.shape[-1]) ** 0.5  # (B, H, T, S)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        w = scores.softmax(dim=-1)
        if mask is not None:  # a query that sees no key gets zeros, as scaled_dot_product_attention gives
            w = w.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
        return merge_heads(w @ v)  # (B, T, H*hd)


class ExportRotary:
    """Rotary angles from the positions of this call (the same floats as the cached tables)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0, rows: torch.Tensor | None = None):
        T, half = q.shape[2], q.shape[3] // 2
        positions = (torch.arange(T, device=q.device) + offset) if rows is None else rows[:, None]  # (T,) or (B, 1, T)
        freqs = positions.float()[..., None] * self.inv_freq.float()  # (T, hd/2) or (B, 1, T, hd/2)
        cos = torch.cat((freqs.cos(), freqs.cos()), dim=-1).to(q.dtype)  # (T, hd) or (B, 1, T, hd)
        sin = torch.cat((-freqs.sin(), freqs.sin()), dim=-1).to(q.dtype)
        return q * cos + q.roll(half, dims=-1) * sin, k * cos + k.roll(half, dims=-1) * sin


class ExportRMSNorm:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
        y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
        return y * self.weight if self.weight is not None else y  # (..., dim)


EXPORT_FORMS = ((Attention, ExportAttention), (Rotary, ExportRotary), (nn.RMSNorm, ExportRMSNorm))
_forms: dict[type, type] = {}


class Outputs(nn.Module):
    """The model's outputs as a tuple, in the config's order (ONNX graphs have positional outputs)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.names = model, list(model.output_names)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(*inputs)
        return (out,) if len(self.names) == 1 else tuple(out[n] for n in self.names)


def plain_model(model: nn.Module) -> nn.Module:
    """A copy of a built graph model without the speed tricks or adapters, with the export forms above."""
    with torch.random.fork_rng(devices=[]):
        copy = GraphModel(model.spec)
    copy.load_state_dict(adapters.merged_state(model), strict=True)
    for module in copy.modules():
        form = next((f for base, f in EXPORT_FORMS if isinstance(module, base)), None)
        cls = type(module)
        if form is not None:
            if cls not in _forms:
                _forms[cls] = type(cls.__name__, (form, cls), {"__module__": cls.__module__})
            module.__class__ = _forms[cls]
    return copy.eval()


def example_sizes(model: nn.Module, smaller: bool = False) -> dict[str, int]:
    """A size for each named dimension (7, or less where a position table is shorter; 2 for batch), or one less."""
    sizes: dict[str, int] = {}
    for name, spec in model.input_specs.items():
        limit = context_length(model.spec, name) or EXAMPLE["other"]
        for i, d in enumerate(spec["shape"]):
            if isinstance(d, str):
                size = EXAMPLE["batch"] if d == "batch" else max(2, min(EXAMPLE["other"], limit if i else 99))
                sizes[d] = min(sizes.get(d, size), size)
    return {d: n - 1 for d, n in sizes.items()} if smaller else sizes


def example_inputs(model: nn.Module, sizes: dict[str, int] | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs of the model's declared shapes: token ids below each embedding's size, no padding, normal floats."""
    g = torch.Generator().manual_seed(seed)
    sizes = {**example_sizes(model), **(sizes or {})}
    out = {}
    for name, spec in model.input_specs.items():
        shape = [d if isinstance(d, int) else sizes[d] for d in spec["shape"]]
        kind = spec.get("dtype", "float")
        if kind == "long":
            out[name] = torch.randint(0, vocabulary(model.spec, name) or 2, shape, generator=g)
        elif kind == "bool":
            out[name] = torch.zeros(shape, dtype=torch.bool)
        else:
            out[name] = torch.randn(shape, generator=g)
    return out


def dynamic_axes(model: nn.Module, outputs: tuple[torch.Tensor, ...], names: list[str]) -> dict[str, dict[int, str]]:
    """Named input dimensions, and the output dimensions that follow them (found by a second, smaller run)."""
    axes = {n: {i: d for i, d in enumerate(s["shape"]) if isinstance(d, str)} for n, s in model.input_specs.items()}
    big, small = example_sizes(model), example_sizes(model, smaller=True)
    with torch.no_grad():
        again = Outputs(model)(*example_inputs(model, small).values())
    by_change = {(big[d], small[d]): d for d in sorted(big)}
    for name, a, b in zip(names, outputs, again):
        axes[name] = {i: by_change.get((x, y), f"{name}_{i}") for i, (x, y) in enumerate(zip(a.shape, b.shape))
                      if x != y}
    return axes


def export(loaded: Any, out: str | Path) -> Path:
    """Write `loaded` (builder.serve.checkpoint.Loaded) as out/model.onnx (+ config.yaml, tokenizer.json)."""
    model = plain_model(loaded.model)
    inputs = example_inputs(model)
    names = list(model.output_names)
    wrapped = Outputs(model).eval()
    with torch.no_grad():
        outputs = wrapped(*inputs.values())
    axes = dynamic_axes(model, outputs, names)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values it records as constants
            torch.onnx.export(wrapped, tuple(inputs.values()), str(out / FILE), input_names=list(inputs),
                              output_names=names, dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    except ImportError as e:
        raise ConfigError(f"format=onnx: needs the onnx package (pip install onnx onnxruntime): {e}") from None
    except Exception as e:  # noqa: BLE001 - an operator ONNX cannot express: one line naming it
        raise ConfigError(f"format=onnx: the model does not export to ONNX opset {OPSET}: "
                          f"{str(e).strip().splitlines()[0]}") from None
    config = dict(loaded.config, adapters={"name": "none"})
    OmegaConf.save(OmegaConf.create(config), out / "config.yaml")
    if loaded.tokenizer is not None:
        (out / "tokenizer.json").write_text(loaded.tokenizer, encoding="utf-8")
    return out
