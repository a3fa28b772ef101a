"""A declarative, config-driven model builder: YAML block graphs -> PyTorch modules -> trained models."""
from builder.graph.registry import block
from builder.plugins import data_source, task

__all__ = ["block", "task", "data_source", "load", "build_model"]


def __getattr__(name: str):
    # Imported on first use: `import builder` must stay cheap (no torch) for fast config checks.
    if name == "load":
        from builder.serve.api import load  # deferred: `import builder` must not import torch
        return load
    if name == "build_model":
        from builder.graph.build import build_model  # deferred: `import builder` stays light for config checks
        return build_model
    raise AttributeError(name)
