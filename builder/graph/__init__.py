"""The graph stage: a model config (YAML) -> a typed spec -> validated -> shapes on the meta device -> a module.

    spec, registry, typecheck, validate   the config as a typed graph, checked without torch
    shapes, plan                          output shapes and parameters per node, drawn
    assemble, init, build                 the nn.Module and its initial weights
    decoding, trace, attention            running it step by step, following values, capturing attention
"""
__all__ = ["build_model", "check_structure"]


def __getattr__(name: str):
    # `import builder` stays light: the registry is read on every config check, the rest on demand
    if name in __all__:
        from builder.graph import build  # deferred: `import builder` reads only the registry
        return getattr(build, name)
    raise AttributeError(name)
