"""Config and argument mutations for property-based tests (tests/test_fuzz.py) and the longer run in
benchmarks/fuzz.py: drop a key, change a value's type, put a number out of range, empty a list, point an edge
at another or an unknown node. A mutation must end in a run of one step or in keyed one-line errors."""
from __future__ import annotations

import copy
import re
from typing import Any

from hypothesis import strategies as st

KEYED = re.compile(r"^[\w.\[\]=+~-]+(:| \S)")  # a line that starts with the key (or trial/argument) it is about
SMALL_NUMBERS = [-7, -1, 0, 1, 2, 3, 0.5, -0.25, 1.5, 64]
LARGE_NUMBERS = [10**6, 10**9, 2**63, float("inf"), float("nan"), 1e-30]
ODD_VALUES = ["", "abc", None, True, [], [1, "x"], {"a": 1}, "${model.nope}"]


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into nested dicts and lists (containers included)."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            found.append(prefix + (k,))
            found += paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found.append(prefix + (i,))
            found += paths(v, prefix + (i,))
    return found


def get(node: Any, path: tuple) -> Any:
    for p in path:
        node = node[p]
    return node


def node_names(cfg: dict) -> list[str]:
    model = cfg.get("model") or {}
    names = list(model.get("inputs") or {}) + list(model.get("nodes") or {})
    for node in (model.get("nodes") or {}).values():
        if isinstance(node, dict) and isinstance(node.get("body"), dict):
            names += list(node["body"])
    return names


@st.composite
def mutated(draw: Any, cfg: dict, large: bool = False) -> tuple[dict, str]:
    """(a mutated copy of cfg, a description of the mutation)."""
    cfg = copy.deepcopy(cfg)
    path = draw(st.sampled_from([p for p in paths(cfg) if p[0] != "hydra"]))
    parent, key = get(cfg, path[:-1]), path[-1]
    value = parent[key]
    kinds = ["drop", "type", "odd"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        kinds += ["number"] * 3
    if isinstance(value, (list, dict)):
        kinds.append("empty")
    if isinstance(value, str) and value in node_names(cfg):
        kinds += ["edge"] * 3
    kind = draw(st.sampled_from(kinds))
    if kind == "drop":
        if isinstance(parent, list):
            parent.pop(key)
        else:
            del parent[key]
    elif kind == "number":
        parent[key] = draw(st.sampled_from(SMALL_NUMBERS + (LARGE_NUMBERS if large else [])))
    elif kind == "type":
        parent[key] = str(value) if not isinstance(value, str) else draw(st.sampled_from([1, 2.5, [value], True]))
    elif kind == "odd":
        parent[key] = draw(st.sampled_from(ODD_VALUES))
    elif kind == "empty":
        parent[key] = type(value)()
    else:  # an edge to another node, or to one that does not exist
        parent[key] = draw(st.sampled_from([n for n in node_names(cfg) if n != value] + [value + "_x"]))
    return cfg, f"{kind} {'.'.join(map(str, path))}: {value!r} -> {get_or(parent, key)!r}"


def get_or(parent: Any, key: Any) -> Any:
    try:
        return parent[key]
    except (KeyError, IndexError):
        return "(removed)"


@st.composite
def arguments(draw: Any, valid: list[str], spec: dict) -> list[str]:
    """A command line made from a valid one: an argument dropped, misspelt, or given an odd value."""
    args = list(valid)
    i = draw(st.integers(0, len(args) - 1))
    key, _, value = args[i].partition("=")
    kind = draw(st.sampled_from(["drop", "misspell", "value", "value", "extra"]))
    if kind == "drop":
        args.pop(i)
    elif kind == "misspell":
        args[i] = f"{key[:-1]}{key[-1] * 2}={value}"
    elif kind == "value":
        odd = draw(st.sampled_from(["-1", "0", "1e9", "nan", "abc", "[1,2]", "", "true", "2.5", "{a: 1}"]))
        args[i] = f"{key}={odd}"
    else:
        extra = draw(st.sampled_from(list(spec)))
        odd = draw(st.sampled_from(["-1", "0", "abc", "[]", "3"]))
        args.append(f"{extra}={odd}")
    return args


def keyed_lines(text: str) -> bool:
    """Each problem line of a ConfigError names what it is about."""
    return all(KEYED.match(line) for line in text.splitlines() if line.strip())
