"""A JSON Schema (draft 2020-12) of model configs, from the block registry: editors complete block names,
arguments and ports, and flag unknown keys, as the validator would."""
from __future__ import annotations

import ast
from typing import Any

from builder.graph.registry import BlockSchema
from builder.graph.validate import INIT_KEYS, INIT_SCHEMES

INTERPOLATION = {"type": "string", "pattern": r"^\$\{.*\}$"}


def _json_type(annotation: str) -> dict[str, Any]:
    try:
        node = ast.parse(annotation, mode="eval").body
    except SyntaxError:
        return {}
    return _of(node)


def _of(node: ast.AST) -> dict[str, Any]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return {"anyOf": [_of(node.left), _of(node.right)]}
    if isinstance(node, ast.Constant) and node.value is None:
        return {"type": "null"}
    if isinstance(node, ast.Name):
        return {"int": {"type": "integer"}, "float": {"type": "number"}, "bool": {"type": "boolean"},
                "str": {"type": "string"}}.get(node.id, {})
    if isinstance(node, ast.Subscript):
        outer = getattr(node.value, "id", "")
        if outer == "Literal":
            options = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            return {"enum": [o.value for o in options if isinstance(o, ast.Constant)]}
        if outer in ("list", "tuple"):
            inner = node.slice.elts[0] if isinstance(node.slice, ast.Tuple) else node.slice
            return {"type": "array", "items": _of(inner)}
    return {}


def _block_schema(s: BlockSchema) -> dict[str, Any]:
    ref = {"type": "string", "description": "a node or input name"}
    props: dict[str, Any] = {
        "block": {"const": s.name},
        "in": {"anyOf": [ref, {"type": "array", "items": ref}, {"type": "object"}]},
        "tie": {"type": ["string", "null"]},
        "unused": {"type": "boolean"},
        "init": {"$ref": "#/$defs/init"},
    }
    for port in s.ports:
        props[port.name] = ref
    for arg in s.args.values():
        props[arg.name] = {"anyOf": [_json_type(arg.type), INTERPOLATION], "description": arg.describe()}
        if not arg.required:
            props[arg.name]["default"] = arg.default
    required = ["block"] + [a.name for a in s.args.values() if a.required]
    return {"type": "object", "description": s.doc, "properties": props, "required": required,
            "additionalProperties": False}


def model_schema(blocks: dict[str, BlockSchema]) -> dict[str, Any]:
    node_ref = {"anyOf": [{"$ref": f"#/$defs/block_{n}"} for n in sorted(blocks)] + [{"$ref": "#/$defs/repeat"}]}
    defs: dict[str, Any] = {f"block_{n}": _block_schema(s) for n, s in blocks.items()}
    defs["nodes"] = {"type": "object", "additionalProperties": {"$ref": "#/$defs/node"}}
    defs["node"] = node_ref
    defs["repeat"] = {"type": "object", "required": ["repeat", "in", "body"], "additionalProperties": False,
                      "properties": {"repeat": {"anyOf": [{"type": "integer", "minimum": 1}, INTERPOLATION]},
                                     "in": {"type": "string"}, "input": {"type": "string"},
                                     "out": {"type": "string"}, "unused": {"type": "boolean"},
                                     "body": {"$ref": "#/$defs/nodes"}}}
    defs["init"] = {"type": "object", "additionalProperties": False,
                    "properties": {"weights": {"enum": list(INIT_SCHEMES)}, "std": {"type": "number"},
                                   "scaled_residual": {"type": "boolean"}}}
    assert set(defs["init"]["properties"]) == set(INIT_KEYS)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "builder model config",
        "type": "object",
        "required": ["inputs", "nodes", "outputs"],
        "properties": {
            "inputs": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "shape": {"type": "array"}, "dtype": {"enum": ["float", "long", "bool"]}}, "additionalProperties": False}},
            "nodes": {"$ref": "#/$defs/nodes"},
            "outputs": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "object"}]},
            "init": {"$ref": "#/$defs/init"},
            "imports": {"type": "array", "items": {"type": "string"}},
            "dims": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
        "additionalProperties": True,  # model-level variables
        "$defs": defs,
    }
