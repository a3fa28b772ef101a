"""The two entry points from a model config: `check_structure` (no torch) and `build_model`.

`build_model` validates, infers shapes on the meta device (no weight is allocated before the whole graph
checks out), then builds, ties and initialises the real module (see `assemble.py` and `init.py`).
"""
from __future__ import annotations

from typing import Any

from builder.config import resolve
from builder.graph.spec import ModelSpec
from builder.graph.validate import parse_model


def check_structure(model_cfg: Any, root: str = "model") -> ModelSpec:
    """Resolve and validate a model config without importing torch; raise ConfigError with every problem."""
    return parse_model(model_cfg if isinstance(model_cfg, dict) else resolve(model_cfg, root), root)


def build_model(model_cfg: Any, root: str = "model", check_shapes: bool = True, device: Any = None) -> Any:
    """A GraphModel (torch.nn.Module) from a model config."""
    spec = check_structure(model_cfg, root)
    if check_shapes:
        from builder.graph.shapes import infer_shapes  # deferred: config errors are reported before torch is imported
        infer_shapes(spec)  # raises ConfigError on a shape mismatch
    import torch  # deferred: config errors are reported before torch is imported

    from builder.graph import fast  # deferred: config errors are reported before torch is imported
    from builder.graph.assemble import GraphModel  # deferred: config errors are reported before torch is imported
    from builder.graph.init import initialise  # deferred: config errors are reported before torch is imported
    with torch.device(device or "cpu"):
        model = GraphModel(spec)
    initialise(model, spec)
    return fast.apply(model)  # speed tricks, kept apart from the blocks (BUILDER_KERNELS=off: none)
