"""Check a config value against a block argument's type annotation, given as text ("int | None")."""
from __future__ import annotations

import ast
from typing import Any

from builder.errors import suggest


def type_ok(value: Any, annotation: str) -> bool:
    try:
        return _ok(value, ast.parse(annotation, mode="eval").body)
    except SyntaxError:
        return True  # an annotation we cannot read is not checked


def mismatch(value: Any, annotation: str) -> str:
    """Why `value` does not fit `annotation`: "expected one of 'a', 'b', got 'c' (did you mean 'a'?)" for a
    Literal, "expected int | None, got 'x' (str)" otherwise."""
    try:
        node = ast.parse(annotation, mode="eval").body
    except SyntaxError:
        node = None
    if isinstance(node, ast.Subscript) and getattr(node.value, "id", getattr(node.value, "attr", "")) == "Literal":
        inner = node.slice
        options = [o.value for o in (inner.elts if isinstance(inner, ast.Tuple) else [inner])
                   if isinstance(o, ast.Constant)]
        hint = suggest(value, [o for o in options if isinstance(o, str)]) if isinstance(value, str) else ""
        return f"expected one of {', '.join(repr(o) for o in options)}, got {value!r}{hint}"
    return f"expected {annotation}, got {value!r} ({type(value).__name__})"


def _ok(value: Any, node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _ok(value, node.left) or _ok(value, node.right)
    if isinstance(node, ast.Constant) and node.value is None:
        return value is None
    if isinstance(node, ast.Name):
        return _simple(value, node.id)
    if isinstance(node, ast.Attribute):
        return _simple(value, node.attr)
    if isinstance(node, ast.Subscript):
        outer = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", "")
        inner = node.slice
        if outer == "Literal":
            options = inner.elts if isinstance(inner, ast.Tuple) else [inner]
            return any(isinstance(o, ast.Constant) and o.value == value and type(o.value) is type(value) for o in options)
        if outer == "Optional":
            return value is None or _ok(value, inner)
        if outer == "Union":
            return any(_ok(value, o) for o in inner.elts)
        if outer in ("list", "List", "Sequence", "tuple", "Tuple"):
            if not isinstance(value, (list, tuple)):
                return False
            if isinstance(inner, ast.Tuple):  # tuple[int, ...] or tuple[int, int]
                inner = inner.elts[0]
            return all(_ok(v, inner) for v in value)
        if outer in ("dict", "Dict", "Mapping"):
            return isinstance(value, dict)
    return True


def _simple(value: Any, name: str) -> bool:
    if name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "bool":
        return isinstance(value, bool)
    if name == "str":
        return isinstance(value, str)
    if name in ("list", "List", "Sequence", "tuple", "Tuple"):
        return isinstance(value, (list, tuple))
    if name in ("dict", "Dict", "Mapping"):
        return isinstance(value, dict)
    return True  # Any and unknown names
