"""Composing and resolving configs: Hydra's compose API for non-training commands, and resolution that
reports every broken interpolation with its config path instead of stopping at the first."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from builder.errors import ConfigError, suggest

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
_ARITH = re.compile(r"^[\d\s.+\-*/()%]+$")


def _calc(expr: Any) -> int | float:
    """`${calc:4*${model.d_model}}`: arithmetic on numbers only, no names, no calls."""
    text = str(expr)
    if not _ARITH.match(text):
        raise ValueError(f"calc: only numbers and + - * / // % ( ) are allowed, got '{text}'")
    value = eval(text, {"__builtins__": {}}, {})  # safe: the pattern admits digits and operators only
    return int(value) if isinstance(value, float) and value.is_integer() and "/" not in text.replace("//", "") else value


def register_resolvers() -> None:
    from omegaconf import OmegaConf
    if not OmegaConf.has_resolver("calc"):
        OmegaConf.register_new_resolver("calc", _calc)


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "train") -> Any:
    """The composed (unresolved) config, as `builder-train` would see it, without creating run directories."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_hydra_message(e, overrides)) from None


def _hydra_message(e: Exception, overrides: Any) -> str:
    text = str(e).strip().splitlines()[0]
    m = re.search(r"Could not find '(\w+)/(\w+)'", str(e))
    if m:
        group, name = m.groups()
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        return f"{group}={name}: no such config{suggest(name, options)}; available: {', '.join(options)}"
    cause = str(e.__cause__ or "")
    key = re.search(r"full_key: ([\w.]+)", cause)
    if "is not in struct" in cause and key:
        dotted = key.group(1)
        others = [o for o in overrides if not o.lstrip("+~").startswith(dotted + "=")]
        return (f"{dotted}: no such key{_suggest_key(dotted, others)}; "
                f"to add a new key on purpose write +{dotted}=...")
    return text


def _suggest_key(dotted: str, overrides: list[str]) -> str:
    try:
        cfg = compose(overrides)
    except ConfigError:
        return ""
    *parents, leaf = dotted.split(".")
    node = cfg
    for p in parents:
        node = node.get(p) if hasattr(node, "get") else None
        if node is None:
            return ""
    return suggest(leaf, list(node.keys())) if hasattr(node, "keys") else ""


def resolve(cfg: Any, path: str) -> Any:
    """Plain Python data from a DictConfig/ListConfig/plain value; every broken interpolation is reported."""
    from omegaconf import DictConfig, ListConfig
    register_resolvers()
    problems: list[str] = []

    def walk(node: Any, p: str) -> Any:
        if isinstance(node, DictConfig):
            out = {}
            for key in node.keys():
                try:
                    out[key] = walk(node[key], f"{p}.{key}")
                except Exception as e:  # noqa: BLE001 - each broken interpolation becomes one reported line
                    problems.append(f"{p}.{key}: {_interp_message(e)}")
            return out
        if isinstance(node, ListConfig):
            items = []
            for i in range(len(node)):
                try:
                    items.append(walk(node[i], f"{p}[{i}]"))
                except Exception as e:  # noqa: BLE001
                    problems.append(f"{p}[{i}]: {_interp_message(e)}")
            return items
        return node

    result = walk(cfg, path)
    if problems:
        raise ConfigError(problems)
    return result


def _interp_message(e: Exception) -> str:
    text = str(e).splitlines()[0]
    m = re.search(r"Interpolation key '([\w.]+)' not found", text)
    if m:
        return f"interpolation ${{{m.group(1)}}} refers to a key that does not exist"
    return text
