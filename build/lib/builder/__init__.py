"""A declarative, config-driven model builder: YAML block graphs -> PyTorch modules -> trained models."""
from builder.graph.registry import block

__all__ = ["block", "load", "build_model"]


def __getattr__(name: str):
    # Imported on first use: `import builder` must stay cheap (no torch) for fast config checks.
    if name == "load":
        from builder.serve.api import load
        return load
    if name == "build_model":
        from builder.graph.build import build_model
        return build_model
    raise AttributeError(name)
