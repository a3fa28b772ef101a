"""Composing and resolving configs: Hydra's compose API for non-training commands, and resolution that
reports every broken interpolation with its config path instead of stopping at the first."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from builder.errors import ConfigError, suggest

# the shipped configs: builder/conf in an installed package, conf/ beside builder/ in the repository
CONF_DIR = next((d for d in (Path(__file__).resolve().parent / "conf", Path(__file__).resolve().parent.parent / "conf")
                 if (d / "train.yaml").is_file()), Path(__file__).resolve().parent.parent / "conf")
_ARITH = re.compile(r"^[\d\s.+\-*/()%]+$")


def _calc(expr: Any) -> int | float:
    """`${calc:4*${model.d_model}}`: arithmetic on numbers only, no names, no calls."""
    text = str(expr)
    if not _ARITH.match(text):
        raise ValueError(f"calc: only numbers and + - * / // % ( ) are allowed, got '{text}'")
    value = eval(text, {"__builtins__": {}}, {})  # safe: the pattern admits digits and operators only
    return int(value) if isinstance(value, float) and value.is_integer() and "/" not in text.replace("//", "") else value


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("calc"):
        OmegaConf.register_new_resolver("calc", _calc)


def config_dirs(argv: list[str]) -> tuple[list[Path], list[str]]:
    """A user's own config directories (`--config-dir DIR`, `-cd DIR`, `--config-dir=DIR`: Hydra's flag, searched
    before the shipped configs) and the rest of the command line."""
    dirs, rest, args = [], [], iter(argv)
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in ("--config-dir", "-cd"):
            value = value if eq else next(args, "")
            if not value or not Path(value).expanduser().is_dir():
                raise ConfigError(f"--config-dir: {value or '(missing)'} is not a directory")
            dirs.append(Path(value).expanduser().resolve())
        else:
            rest.append(arg)
    return dirs, rest


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "train",
            dirs: list[Path] | tuple[Path, ...] = ()) -> Any:
    """The composed (unresolved) config, as `builder-train` would see it, without creating run directories;
    `dirs` are a user's config directories, searched as `--config-dir` makes Hydra search them."""
    register_resolvers()
    search = [f"hydra.searchpath=[{','.join(f'file://{d}' for d in dirs)}]"] if dirs else []
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=[*search, *overrides])
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_hydra_message(e, overrides, dirs)) from None


def _hydra_message(e: Exception, overrides: Any, dirs: Any = ()) -> str:
    text = str(e).strip().splitlines()[0]
    m = re.search(r"Could not find '(\w+)/(\w+)'", str(e))
    if m:
        group, name = m.groups()
        options = sorted({p.stem for d in (*dirs, CONF_DIR) for p in (Path(d) / group).glob("*.yaml")})
        return f"{group}={name}: no such config{suggest(name, options)}; available: {', '.join(options)}"
    cause = str(e.__cause__ or "")
    key = re.search(r"full_key: ([\w.]+)", cause)
    if "is not in struct" in cause and key:
        dotted = key.group(1)
        others = [o for o in overrides if not o.lstrip("+~").startswith(dotted + "=")]
        return (f"{dotted}: no such key{_suggest_key(dotted, others, dirs)}; "
                f"to add a new key on purpose write +{dotted}=...")
    return text


def _suggest_key(dotted: str, overrides: list[str], dirs: Any = ()) -> str:
    try:
        cfg = compose(overrides, dirs=dirs)
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
