"""The model config as a typed graph spec: parsed from plain data, without torch.

A model config holds variables (any key not reserved below), `inputs`, `nodes`, `outputs`, and optionally
`init`, `imports` and `dims`. A node is either a block (`block: NAME` plus its arguments and ports) or a
`repeat` of a sub-graph (`body`) whose copies each have their own weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MODEL_KEYS = ("inputs", "nodes", "outputs", "init", "imports", "dims")
INPUT_KEYS = ("shape", "dtype")
DTYPES = ("float", "long", "bool")
REPEAT_KEYS = ("repeat", "in", "body", "input", "out", "unused")


@dataclass
class InputSpec:
    name: str
    shape: list[int | str]
    dtype: str = "float"


@dataclass
class NodeSpec:
    name: str
    path: str  # config path, e.g. "model.nodes.decoder.body.cross"
    block: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # port -> source name
    input_paths: dict[str, str] = field(default_factory=dict)  # port -> config path of that edge
    tie: str | None = None
    unused: bool = False
    init: dict[str, Any] | None = None
    repeat: int | None = None  # set for repeat nodes
    body: GraphSpec | None = None
    carry: str = "x"  # the name a body uses for the value carried from copy to copy
    out: str | None = None  # the body node whose value is carried on

    def sources(self) -> list[str]:
        """Names this node reads: its ports, and for a repeat also the outer names its body reads."""
        names = list(self.inputs.values())
        if self.body is not None:
            names += [n for n in self.body.outer_reads(exclude=(self.carry,)) if n not in names]
        return names


@dataclass
class GraphSpec:
    path: str
    nodes: dict[str, NodeSpec] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # execution order, filled in by validation

    def outer_reads(self, exclude: tuple[str, ...] = ()) -> list[str]:
        """Names read inside this graph that it does not define itself."""
        seen: list[str] = []
        for node in self.nodes.values():
            for src in node.sources():
                if src not in self.nodes and src not in exclude and src not in seen:
                    seen.append(src)
        return seen


@dataclass
class ModelSpec:
    inputs: dict[str, InputSpec]
    graph: GraphSpec
    outputs: dict[str, str]  # output name -> node name
    init: dict[str, Any] = field(default_factory=dict)
    imports: list[str] = field(default_factory=list)
    dims: dict[str, int] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)


def is_name(text: Any) -> bool:
    return isinstance(text, str) and text.isidentifier()
