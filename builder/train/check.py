"""The checks of a training config that need no torch: a typo fails in about a second, before torch and
Lightning are imported (builder/train/run.py, the training driver, imports them).

`check(cfg)` reports every problem it finds as one ConfigError; `check_shapes(cfg)` adds the model's shapes and
the adapters' targets on the meta device (builder-train --check and the sweep check), which imports torch.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from builder import settings
from builder.config import resolve
from builder.contract import check_binding, check_data, check_task
from builder.errors import ConfigError
from builder.graph.build import check_structure
from builder.graph.prepare import prepare_model_config
from builder.plugins import import_modules
from builder.train.init_from import apply, check_adapters

SECTIONS = ("data", "model", "task", "optim", "trainer")
LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")  # builder/train/loggers.py makes them
MLFLOW_DEFAULT = "sqlite:///outputs/mlflow.db"


def checked_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The config a run trains from, checked: with init_from, the source's model and tokenizer applied first."""
    if cfg.get("init_from"):  # the model and tokenizer come from there
        cfg = apply(cfg, overrides)
    check(cfg)
    return cfg


def check(cfg: DictConfig) -> None:
    """Every problem in the config we can find without torch, raised together as one ConfigError."""
    import_modules(list(cfg.get("imports") or []))  # a user's tasks and data sources register on import
    problems = [f"{s}: missing (the defaults list in conf/train.yaml selects it)" for s in SECTIONS if s not in cfg]
    spec = None
    if "model" in cfg:
        try:
            spec = check_structure(prepare_model_config(cfg))  # `auto` sizes get placeholders until the data is known
        except ConfigError as e:
            problems += e.problems
    task_problems = check_task(cfg.task) if "task" in cfg else []
    problems += task_problems
    if spec is not None and "task" in cfg and not task_problems:
        problems += check_binding(OmegaConf.to_container(cfg.task, resolve=True), spec)
    if "data" in cfg:
        problems += check_data(cfg.data, cfg.get("task"))
    problems += check_settings(cfg)
    problems += check_loggers(cfg.get("logger"))
    if problems:
        raise ConfigError(problems)


def check_settings(cfg: DictConfig) -> list[str]:
    """The run options, the optimiser and the trainer against their typed schemas (builder/settings.py)."""
    problems = []
    for name in cfg:  # every broken interpolation outside the model (whose own are reported with its graph)
        if name != "model":
            try:
                resolve(cfg[name], str(name)) if OmegaConf.is_config(cfg._get_node(name)) else cfg[name]
            except ConfigError as e:
                problems += e.problems
            except Exception as e:  # noqa: BLE001 - a top-level value that does not resolve
                problems.append(f"{name}: {str(e).splitlines()[0]}")
    if problems:
        return problems
    top = {k: v for k, v in cfg.items() if k not in settings.GROUPS}
    problems += settings.check(OmegaConf.to_container(OmegaConf.create(top), resolve=True), settings.RUN, "")
    for name, section, checker in (("optim", settings.OPTIM, None), ("trainer", None, settings.check_trainer)):
        if name not in cfg:
            continue
        if not OmegaConf.is_dict(cfg._get_node(name)):
            problems.append(f"{name}: expected a mapping, got {cfg[name]!r}")
            continue
        try:
            values = OmegaConf.to_container(cfg[name], resolve=True)
        except Exception:  # noqa: BLE001 - a broken interpolation is reported with its path elsewhere
            continue
        problems += checker(values) if checker else settings.check(values, section, name)
    problems += check_adapters(cfg)
    optimizer = OmegaConf.select(cfg, "optim.optimizer") if OmegaConf.is_dict(cfg.get("optim")) else None
    if OmegaConf.is_dict(optimizer):
        if not isinstance(optimizer.get("_target_"), str) or not optimizer.get("_target_"):
            problems.append("optim.optimizer._target_: expected a class name such as torch.optim.AdamW, got "
                            f"{optimizer.get('_target_')!r}")
        if optimizer.get("_partial_") is not True:
            problems.append(f"optim.optimizer._partial_: must be true (the optimiser is called with the parameter "
                            f"groups), got {optimizer.get('_partial_')!r}")
    return problems


def check_loggers(logger_cfg: Any) -> list[str]:
    if logger_cfg is not None and not hasattr(logger_cfg, "items"):
        return [f"logger: expected a mapping of loggers (logger=csv, logger=[tensorboard,wandb]), got {logger_cfg!r}"]
    problems = []
    for key, value in dict(logger_cfg or {}).items():
        if value is not None and not hasattr(value, "items"):
            problems.append(f"logger.{key}: expected a mapping of its settings, got {value!r}")
        elif key not in LOGGERS and not (hasattr(value, "get") and value.get("_target_")):
            problems.append(f"logger.{key}: unknown logger; available: {', '.join(LOGGERS)} "
                            "(or a mapping with a Lightning logger's _target_)")
    mlflow = (logger_cfg or {}).get("mlflow")
    uri = str((mlflow.get("tracking_uri") if hasattr(mlflow, "get") else None) or MLFLOW_DEFAULT)
    if ":" not in uri or uri.startswith("file:"):
        problems.append(f"logger.mlflow.tracking_uri: '{uri}' is a file store, which MLflow has put in maintenance "
                        "mode; give sqlite:///PATH/mlflow.db or a server's http://HOST:PORT")
    return problems


def check_shapes(cfg: DictConfig) -> None:
    """check(cfg), then the model's shapes on the meta device (imports torch; no weight is allocated)."""
    check(cfg)
    from builder.graph.shapes import infer_shapes  # deferred: config errors are reported before torch is imported
    infer_shapes(check_structure(prepare_model_config(cfg)))
    check_adapter_targets(cfg)


def check_adapter_targets(cfg: DictConfig) -> None:
    """With adapters: each target names nodes of the model that hold linear layers (a module on the meta device)."""
    section = OmegaConf.to_container(cfg.adapters, resolve=True) if OmegaConf.is_dict(cfg.get("adapters")) else {}
    from builder.graph import adapters  # deferred: config errors are reported before torch is imported
    if adapters.enabled(section):
        adapters.plan_counts(check_structure(prepare_model_config(cfg)), section)
