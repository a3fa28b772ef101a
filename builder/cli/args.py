"""`key=value` arguments for the commands that do not go through Hydra (predict, eval, export).

Values are parsed like Hydra overrides (OmegaConf.from_dotlist), so `input=[32,107,56,11.2]` is a list and
`allow_imports=true` a bool. Unknown keys are errors, with a did-you-mean.
"""
from __future__ import annotations

import copy
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from builder.errors import ConfigError, suggest
from builder.settings import REQUIRED, Setting  # noqa: F401 - REQUIRED is the commands' marker too


def take_raw(argv: list[str], keys: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """`key=value` arguments for `keys`, as raw strings (everything after the first "=", so a prompt may
    hold commas, quotes and "="), apart from the rest of the command line."""
    raw, rest = {}, []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key in keys:
            raw[key] = value
        else:
            rest.append(arg)
    return raw, rest


def parse_args(argv: list[str], spec: dict[str, Any], groups: tuple[str, ...] = (), usage: str = "") -> dict[str, Any]:
    """{key: value} for `argv`; `spec` maps each accepted key to a Setting (type, default, range: every value is
    checked) or to a plain default (or REQUIRED).

    `usage`, if given, is shown under the problems (on the same numbered line, so the count stays right).

    Dotted keys under one of `groups` (e.g. `data.seed=3`) are returned nested under the group, to be checked
    by the command against the config they override.
    """
    problems = []
    known = list(spec) + [f"{g}." for g in groups]
    for arg in argv:
        key = arg.partition("=")[0]
        if "=" not in arg:
            problems.append(f"{arg}: expected key=value{suggest(arg, spec)}; accepted: {', '.join(known)}")
        elif key not in spec and key.split(".")[0] not in groups:
            problems.append(f"{key}: unknown argument{suggest(key, spec)}; accepted: {', '.join(known)}")
    if problems:
        raise ConfigError(_with_usage(problems, usage))
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist(list(argv)), resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse the arguments: {str(e).splitlines()[0]}") from None
    args = {k: parsed.get(k, s.default if isinstance(s, Setting) else s) for k, s in spec.items()}
    problems = [f"{k}: required ({k}=...)" for k, v in args.items() if v is REQUIRED]
    problems += [p for k, s in spec.items() if isinstance(s, Setting) and args[k] is not REQUIRED
                 and (p := s.problem(k, args[k]))]
    if problems:
        raise ConfigError(_with_usage(problems, usage))
    for g in groups:
        args[g] = parsed.get(g, {})
    return args


def _with_usage(problems: list[str], usage: str) -> list[str]:
    return problems[:-1] + [f"{problems[-1]}\n  {usage}"] if usage else problems


def apply_overrides(cfg: dict[str, Any], overrides: dict[str, Any], path: str) -> dict[str, Any]:
    """`cfg` with `overrides` merged in; every overridden key must already exist (typos are errors)."""
    problems = []

    def merge(base: dict[str, Any], new: dict[str, Any], p: str) -> None:
        for key, value in new.items():
            if key not in base:
                problems.append(f"{p}.{key}: no such key{suggest(key, base)}; keys: {', '.join(map(str, base))}")
            elif isinstance(value, dict) and isinstance(base[key], dict):
                merge(base[key], value, f"{p}.{key}")
            else:
                base[key] = value

    out = copy.deepcopy(cfg)
    merge(out, overrides, path)
    if problems:
        raise ConfigError(problems)
    return out
