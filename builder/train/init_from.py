"""`init_from=RUN_DIR | FILE.ckpt | EXPORT_DIR | HF_DIR`: a new run that starts from another model's weights.

The model config comes from the source (its resolved model, and its task's role bindings when the task is the
same); the data, task, optimiser and trainer from the command line. The data reads the source's tokenizer:
`data.tokenizer.path` is set to the source's tokenizer.json (a checkpoint's tokenizer text is copied to
<outputs_dir>/cache/tokenizers/<hash>.json). A model override on the command line is refused in one line,
except the dropout variables (`model.dropout=0.1`, any model variable whose name has `dropout` or `pdrop` in
it), which are applied through the source graph's own YAML in conf/model/.

`check_adapters` checks the settings of `adapters=lora` (builder/graph/adapters.py) with the config; the rest of
the adapters' part in a run, which needs torch, is builder/train/adapters.py. With `adapters.save=adapters_only`
checkpoints hold the adapters alone and the base weights are read from init_from again on a resume and when
the checkpoint is loaded.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from builder import settings
from builder.config import CONF_DIR, compose, resolve
from builder.errors import CheckpointError, ConfigError
from builder.serve import checkpoint, hf
from builder.train.resume import override_key

MAY_CHANGE = re.compile(r"dropout|pdrop")  # model variables an init_from run may set
GRAPH = ("inputs", "nodes", "outputs", "init", "dims", "imports")  # a model config's keys that are not variables


def model_overrides(overrides: list[str]) -> dict[str, str]:
    """{model variable: override} for the command line's model overrides; any other is refused in one line."""
    found = {}
    for override in overrides:
        key = override_key(override)
        if key != "model" and not key.startswith("model."):
            continue
        name = key.removeprefix("model.")
        if key == "model" or "." in name or not MAY_CHANGE.search(name):
            raise ConfigError(f"{key}: init_from takes the model from its source, so the command line may not "
                              f"change it (only its dropout variables, such as model.dropout=0.1)")
        found[name] = override
    return found


def read_source(path: str) -> tuple[dict[str, Any], str | None, Path]:
    """(the source's run config, its tokenizer.json text or None, the file or directory read), without weights."""
    p = Path(path).expanduser()
    if hf.is_hf_dir(p):
        tok = p / "tokenizer.json"
        return hf.run_config(p), tok.read_text(encoding="utf-8") if tok.is_file() else None, p
    try:
        found = checkpoint.locate(p)
        cfg, tokenizer = checkpoint.read_config(found)
    except CheckpointError as e:
        raise CheckpointError([f"init_from: {m.removeprefix('ckpt: ')}" for m in e.problems]) from None
    return cfg, tokenizer, found


def with_variables(model: dict[str, Any], changes: dict[str, Any], source: str) -> dict[str, Any]:
    """The source's resolved model with some variables changed, re-resolved through the conf/model/*.yaml whose
    graph reproduces the source's."""
    variables = {k: v for k, v in model.items() if k not in GRAPH}
    graph = {k: model.get(k) for k in GRAPH}
    for name in sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")):
        cfg = compose([f"model={name}"])
        if not set(variables) <= set(cfg.model) or not set(changes) <= set(variables):
            continue
        with open_dict(cfg):
            for key, value in variables.items():
                cfg.model[key] = value
            if {k: v for k, v in resolve(cfg.model, "model").items() if k in GRAPH} != {
                    k: v for k, v in graph.items() if v is not None}:
                continue
            for key, value in changes.items():
                cfg.model[key] = value
        return resolve(cfg.model, "model")
    raise ConfigError(f"model.{next(iter(changes))}: the graph of init_from={source} is none of conf/model/*.yaml, "
                      "so its variables cannot be applied to it again; train it without this override")


def tokenizer_file(where: Path, text: str, outputs_dir: str) -> Path:
    """A file holding the source's tokenizer: its own tokenizer.json, or a copy named by the text's hash."""
    own = (where if where.is_dir() else where.parent) / "tokenizer.json"
    if where.is_dir() and own.is_file() and own.read_text(encoding="utf-8") == text:
        return own.resolve()
    file = Path(outputs_dir).expanduser().resolve() / "cache" / "tokenizers" / (
        hashlib.sha256(text.encode()).hexdigest()[:16] + ".json")
    if not file.is_file():
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(file)
    return file


@contextmanager
def beside_hydra() -> Iterator[None]:
    """Reading a Hugging Face directory or a conf/model template composes configs, which Hydra allows once per
    process: within builder-train's own Hydra application its instance steps aside meanwhile."""
    hydra = GlobalHydra.instance()
    running = hydra.hydra
    hydra.clear()
    try:
        yield
    finally:
        hydra.hydra = running


def apply(cfg: Any, overrides: list[str]) -> Any:
    """`cfg` with the source's model, role bindings and tokenizer (before the config is checked)."""
    with beside_hydra():
        return _apply(cfg, overrides)


def _apply(cfg: Any, overrides: list[str]) -> Any:
    source = str(cfg.init_from)
    given = model_overrides(overrides)
    run, tokenizer, where = read_source(source)
    model = run["model"]
    needs = [m for m in list(model.get("imports") or []) + list(run.get("imports") or [])
             if m not in list(cfg.get("imports") or [])]
    if needs:
        raise ConfigError(f"init_from: {where} needs the Python module(s) {', '.join(needs)} for its blocks, task or "
                          f"data; if you trust them, list them in imports=[{','.join(needs)}]")
    unknown = [k for k in given if k not in model or k in GRAPH]
    if unknown:
        raise ConfigError(f"model.{unknown[0]}: the model of init_from={source} has no such variable; its dropout "
                          f"variables: {', '.join(k for k in model if MAY_CHANGE.search(k)) or 'none'}")
    changes = {k: OmegaConf.select(cfg, f"model.{k}") for k in given}
    if not given and OmegaConf.is_dict(cfg.get("model")):  # a process started by a running train (DDP)
        try:
            mine = resolve(cfg.model, "model")
        except ConfigError:
            mine = None
        changes = {k: v for k, v in (mine or {}).items()
                   if k in model and MAY_CHANGE.search(k) and v != model[k] and k not in GRAPH}
        if mine != model and (not changes or with_variables(model, changes, source) != mine):
            changes = {}
    if changes:
        model = with_variables(model, changes, source)
    with open_dict(cfg):
        cfg.init_from = str(Path(source).expanduser().resolve())
        cfg.model = OmegaConf.create(model)
        task = run.get("task") or {}
        if task.get("name") == OmegaConf.select(cfg, "task.name"):
            for key in ("inputs", "outputs", "sizes"):
                if key in task and not any(o.startswith(f"task.{key}") for o in overrides):
                    cfg.task[key] = task[key]
        if run.get("generation") and not cfg.get("generation"):
            cfg.generation = run["generation"]
        if tokenizer is not None:
            use_tokenizer(cfg, tokenizer, where, source)
    return cfg


def use_tokenizer(cfg: Any, text: str, where: Path, source: str) -> None:
    node = OmegaConf.select(cfg, "data.tokenizer")
    if not OmegaConf.is_dict(node) or "path" not in node:
        raise ConfigError(f"data.tokenizer.path: init_from={source} reads the ids of its own tokenizer, and "
                          f"data.name={OmegaConf.select(cfg, 'data.name')} takes no tokenizer file")
    file = tokenizer_file(where, text, str(cfg.get("outputs_dir") or "outputs"))
    given = node.get("path")
    if given and Path(given).expanduser().resolve() != file:
        try:
            same = json.loads(Path(given).expanduser().read_text(encoding="utf-8")) == json.loads(text)
        except (OSError, ValueError):
            same = False
        if not same:
            raise ConfigError(f"data.tokenizer.path: {given} is not the tokenizer of init_from={source}, whose ids "
                              "the model reads; leave data.tokenizer.path unset")
    node.path = str(file)


def check_adapters(cfg: Any) -> list[str]:
    """The `adapters` section against its kind's schema; LoRA needs whole weights on each process."""
    if "adapters" not in cfg:
        return []
    if not OmegaConf.is_dict(cfg._get_node("adapters")):
        return [f"adapters: expected a mapping (conf/adapters: none or lora), got {cfg.adapters!r}"]
    values = OmegaConf.to_container(cfg.adapters, resolve=True)
    kind = values.get("name", "none")
    if not isinstance(kind, str) or kind not in settings.ADAPTERS:
        return [f"adapters.name: {kind!r} is not allowed; expected one of {', '.join(settings.ADAPTERS)}"]
    problems = settings.check(values, settings.ADAPTERS[kind], "adapters")
    if kind == "none":
        return problems
    strategy = OmegaConf.select(cfg, "trainer.strategy")
    if "fsdp" in str(strategy.get("_target_") if OmegaConf.is_dict(strategy) else strategy).lower():
        problems.append("adapters: LoRA trains on whole weights; use trainer=ddp or one process, not trainer=fsdp")
    if values.get("save", "adapters_only") == "adapters_only" and not cfg.get("init_from"):
        problems.append("adapters.save: adapters_only keeps the adapters alone, so the base weights must come from "
                        "init_from=...; give init_from or adapters.save=full")
    return problems
