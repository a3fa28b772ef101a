"""Linear layers on oneDNN on the CPU, where it beats aten's MKL GEMM.

For float32 on the CPU, aten's linear goes to MKL's GEMM while oneDNN's matmul (the kernel torch.compile's CPU
backend emits for linear layers) is faster on some processors and slower on others. Measured side by side on
this project's 2-core AMD EPYC VMs: with AVX-512, oneDNN was 1.4-1.8x faster for the forward pass from one row
(a decoding step) to 2048 and 1.5x for forward plus backward of a GPT's layers; on an AVX2-only one, aten was
1.1-1.2x faster for the small GPT's training. So by default (`BUILDER_LINEAR=auto`) the oneDNN path is taken on
processors whose vector capability torch reports as AVX-512 and aten's elsewhere: a fixed choice per machine,
so every process of a run (and a resumed run) computes the same way.
`linear(x, weight, bias)` takes the oneDNN path for float32 CPU tensors in eager mode and F.linear everywhere
else (GPU, other dtypes, autocast, torch.compile, tracing, tensor subclasses such as DTensor). Results equal
F.linear's up to float32 rounding, since the sums are taken in another order.

BUILDER_LINEAR=onednn or BUILDER_LINEAR=aten in the environment makes the choice instead; BUILDER_KERNELS=off
leaves models as built, without this or any other trick of builder/graph/fast.py.

Decoding on aten's path splits the product of a few rows by output features, one part per thread, in one batched
product (`split_product`): for one to a few dozen rows MKL runs a matrix product on a single thread, while its
batched product gives each part a thread. Measured on the AVX2 VM (2 threads), a 1536x384 layer: 59 -> 37 us
for one row, 179 -> 127 us for eight; the same numbers as F.linear (each output is the same dot product).
For two rows or more (a batch of prompts, beams) oneDNN reads a copy of the weight laid out in advance for its
kernel (`packed`) faster still: 48 layers of a 6-layer 384-wide Llama's shapes, read from memory, took 520 us a
layer for eight rows against 686 us split (429 against 605 for four, 969 against 1,075 for 32), while one row
stays quicker split (354 against 408 us).
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F
from torch import nn

BACKENDS = ("auto", "onednn", "aten")


def _backend() -> str:
    choice = os.environ.get("BUILDER_LINEAR", "auto")
    if choice not in BACKENDS:
        raise ValueError(f"BUILDER_LINEAR={choice!r} is not a linear backend; choose one of {', '.join(BACKENDS)}")
    return choice


def _onednn_works() -> bool:
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:  # a build may carry the op without a working kernel: check it once against F.linear
        # (explicit device and generator: modules may be first imported inside a `with torch.device("meta")`)
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*s, generator=g, device="cpu") for s in ((3, 8), (5, 8), (5,)))
        return torch.allclose(_op(x, w, b), F.linear(x, w, b), atol=1e-5)
    except (RuntimeError, NotImplementedError):
        return False


def _op(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise.default(x, w, b, "none", [], "")


_CHOICE = _backend()  # checked at import, so a bad BUILDER_LINEAR fails at once
WORKS = _CHOICE != "aten" and _onednn_works()
PACK_ROWS = 8  # the row count a packed weight is laid out for; every count from 2 to DECODE_ROWS reads it


def pack(weight: torch.Tensor) -> torch.Tensor:
    """A copy of weight (out, in) in oneDNN's own layout for a few rows, for _LINEAR_OP (see PACKS)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_ROWS)


def _packing_works() -> bool:
    if not (WORKS and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        return False
    try:  # checked once against F.linear, as _onednn_works does
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*s, generator=g, device="cpu") for s in ((3, 1, 8), (5, 8), (5,)))
        return torch.allclose(_op(x, pack(w), b), F.linear(x, w, b), atol=1e-5)
    except (RuntimeError, NotImplementedError):
        return False


PACKS = _packing_works()
ENABLED = WORKS and (_CHOICE == "onednn" or "AVX512" in torch.backends.cpu.get_cpu_capability())
_PLAIN = (torch.Tensor, nn.Parameter)
# the decoding path calls these directly: each Python frame saved is a measurable share of a decoding step
_LINEAR_OP = getattr(torch.ops.mkldnn._linear_pointwise.default, "_op", _op) if WORKS else _op
_dynamo_compiling, _tracing_state = torch.compiler.is_dynamo_compiling, torch._C._get_tracing_state
MIN_WEIGHT, MIN_WORK = 2**17, 2**21  # weight elements, or rows x weight elements (multiply-adds)
DECODE_ROWS = 64  # at most this many rows read the column-stored copy of the weight, or split the product
SPLIT_MIN_WEIGHT = 2**15  # smaller weights are left whole: splitting costs about 5 us, more than it saves


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return _op(x, w, b)  # (..., out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])  # (N, out)
        gx = gw = gb = None
        # oneDNN reads the transposed operands through their strides: no transposed copies are made
        if ctx.needs_input_grad[0]:
            gx = _op(grad, w.t(), None)  # grad @ w: (..., in)
        if ctx.needs_input_grad[1]:
            gw = _op(g2.t(), x.reshape(-1, x.shape[-1]).t(), None)  # g^T x: (out, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)  # (out,)
        return gx, gw, gb


@contextlib.contextmanager
def disabled():
    """Within the block every linear layer takes aten's path (for side-by-side measurements)."""
    global ENABLED
    before, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = before


def _eager_cpu_float(x: torch.Tensor) -> bool:
    return (x.dtype == torch.float32 and x.device.type == "cpu" and type(x) in _PLAIN
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and not torch.is_autocast_enabled("cpu"))


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the oneDNN path serves x @ weight^T: float32 CPU tensors in eager mode, and enough work to
    repay oneDNN's fixed cost per call (about 15 us; tiny layers stay on aten)."""
    n = weight.numel()
    return (ENABLED and weight.dtype == torch.float32 and type(weight) in _PLAIN and x.numel() > 0
            and (n >= MIN_WEIGHT or x.numel() // weight.shape[1] * n >= MIN_WORK) and _eager_cpu_float(x))


def split_parts(weight: torch.Tensor) -> torch.Tensor | None:
    """The weight (out, in) as `parts` views (parts, in, out // parts), one per thread (up to 8), for
    split_product; None where one thread serves (a single thread, a small weight, not a float32 CPU tensor)."""
    parts = min(torch.get_num_threads(), 8)
    out, n_in = weight.shape
    if (parts < 2 or weight.numel() < SPLIT_MIN_WEIGHT or out < parts or weight.dtype != torch.float32
            or weight.device.type != "cpu" or type(weight) not in _PLAIN or not weight.is_contiguous()):
        return None
    main = out - out % parts
    return weight[:main].view(parts, main // parts, n_in).transpose(1, 2)  # (parts, in, out // parts)


def split_product(x: torch.Tensor, weight: torch.Tensor, parts: torch.Tensor, bias: torch.Tensor | None):
    """x (..., in) @ weight^T + bias, the outputs computed in parts (split_parts) by one batched product, whose
    parts MKL runs on separate threads; rows past the last whole part (out % parts of them) by F.linear."""
    n, n_in, width = parts.shape
    rows = x.reshape(1, -1, n_in)  # (1, N, in)
    N = rows.shape[1]
    y = torch.bmm(rows.expand(n, N, n_in), parts)  # (n, N, width)
    y = y.view(1, n * width) if N == 1 else y.transpose(0, 1).reshape(N, n * width)  # (N, main)
    if n * width < weight.shape[0]:  # an odd vocabulary: the last few outputs
        y = torch.cat([y, F.linear(rows[0], weight[n * width:])], dim=-1)  # (N, out)
    if bias is not None:
        y = y.add_(bias)
    return y.view(*x.shape[:-1], y.shape[-1])  # (..., out)


def decoding_rows(x: torch.Tensor, n_in: int) -> bool:
    """Whether x is a decoding step's input that the decoding paths serve: no gradients recorded, not compiling
    or tracing, a plain float32 CPU tensor of at most DECODE_ROWS rows of n_in features, no autocast."""
    return (not torch.is_grad_enabled() and not _dynamo_compiling() and 0 < x.numel() <= DECODE_ROWS * n_in
            and x.dtype == torch.float32 and x.device.type == "cpu" and type(x) in _PLAIN
            and _tracing_state() is None and not torch.is_autocast_enabled("cpu"))


def _needs_grad(x, weight, bias) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., in) @ weight (out, in)^T + bias -> (..., out), on oneDNN where that applies."""
    if not applies(x, weight):
        return F.linear(x, weight, bias)
    return _OneDNNLinear.apply(x, weight, bias) if _needs_grad(x, weight, bias) else _op(x, weight, bias)


class OneDNNLinear:
    """Mixed into an nn.Linear (or a block subclassing it) by builder/graph/fast.py: the same parameters,
    initialisation and state dict, with `linear` above as forward, plus a decoding path.

    Without gradients and for a few rows (a decoding step), the weight is read from a copy stored column by
    column, (in, out) in memory: oneDNN streams that layout faster for one row (1.3 ms against 1.6 ms for a
    6-layer 384-wide GPT's 24 layers). The copy is made on first use and again whenever the weight changes, for
    models whose linear weights fit graph/fast.py's limit_columns. Where aten serves, in models large enough
    (limit_columns again), one row takes split_product instead, through views of the weight (no copy) made on
    first use, and two rows or more read a packed copy (`pack`), made like the column-stored one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = self._parameters  # read directly: `self.weight` goes through nn.Module.__getattr__, a Python call
        w, b = params["weight"], params["bias"]
        if not ENABLED:  # aten's path; decoding steps of large models split the product (fast.py sets the flag)
            if self.__dict__.get("_split_allowed") and decoding_rows(x, self.in_features):
                if (PACKS and x.numel() > self.in_features and self.__dict__.get("_columns_allowed", True)
                        and w.dtype == torch.float32 and type(w) in _PLAIN):
                    packed = self.__dict__.get("_packed")  # several rows: a packed copy, made on first use
                    if packed is None or packed[0] != w._version or packed[1] != w.data_ptr():
                        packed = self.__dict__["_packed"] = (w._version, w.data_ptr(), pack(w))
                    return _LINEAR_OP(x, packed[2], b, "none", [], "")  # (..., out_features)
                split = self.__dict__.get("_split")
                if split is None or split[0] is not w:  # views of the weight: they follow in-place updates
                    split = self.__dict__["_split"] = (w, split_parts(w))
                if split[1] is not None:
                    return split_product(x, w, split[1], b)  # (..., out_features)
            return F.linear(x, w, b)  # (..., out_features)
        if not _dynamo_compiling() and not torch.is_grad_enabled():  # dynamo first: it stops reading here
            cols = self.__dict__.get("_columns")
            if (cols is not None and cols[0] == w._version and cols[1] == w.data_ptr()
                    and 0 < x.numel() <= DECODE_ROWS * self.in_features
                    and x.dtype == torch.float32 and x.device.type == "cpu" and type(x) in _PLAIN
                    and _tracing_state() is None and not torch.is_autocast_enabled("cpu")):
                # a decoding step: the weight's checks were made with its copy, the input's are inlined
                return _LINEAR_OP(x, cols[2], b, "none", [], "")  # (..., out_features)
            if (0 < x.numel() <= DECODE_ROWS * self.in_features and applies(x, w)
                    and self.__dict__.get("_columns_allowed", True)):  # graph/fast.py: not for large models
                return _op(x, self._copy_by_columns(w), b)  # the first decoding step, or the weight changed since
        return linear(x, w, b)  # (..., out_features)

    def _apply(self, fn, recurse=True):  # .to(), .half(), ...: the copy belongs to the old weight
        for key in ("_columns", "_split", "_packed"):
            self.__dict__.pop(key, None)
        return super()._apply(fn, recurse)

    def __getstate__(self):  # pickling and deepcopy leave the copy and the views behind
        state = super().__getstate__()
        for key in ("_columns", "_split", "_packed"):
            state.pop(key, None)
        return state

    def _copy_by_columns(self, w: torch.Tensor) -> torch.Tensor:
        """The weight as an (out, in) view of (in, out) storage, kept with the weight's version and pointer."""
        copy = w.detach().t().contiguous().t()
        self.__dict__["_columns"] = (w._version, w.data_ptr(), copy)
        return copy
