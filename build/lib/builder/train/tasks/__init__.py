"""Tasks by name: `task.name` in the config -> the LightningModule that trains a built graph for that task.

Looked up by name (never by an import path from a config), so a checkpoint cannot make us import code.
This module stays free of torch so a misspelt task fails before anything heavy is imported.
"""
from __future__ import annotations

import importlib
from typing import Any

from builder.errors import ConfigError, suggest

TASKS = {
    "classification": "builder.train.tasks.classification:ClassificationTask",
    "language_model": "builder.train.tasks.language_model:LanguageModelTask",
    "seq2seq": "builder.train.tasks.seq2seq:Seq2SeqTask",
}
LOSSES = ("cross_entropy", "mse", "l1")
MODES = ("min", "max")


def check_task(task_cfg: Any, path: str = "task") -> list[str]:
    """Problems with a task config, one line each (empty when fine)."""
    if not hasattr(task_cfg, "get"):
        return [f"{path}: expected a mapping with at least `name`, got {task_cfg!r}"]
    problems = []
    name = task_cfg.get("name")
    if name not in TASKS:
        problems.append(f"{path}.name: unknown task '{name}'{suggest(name, TASKS)}; available: {', '.join(TASKS)}")
    loss = task_cfg.get("loss", "cross_entropy")
    if loss not in LOSSES:
        problems.append(f"{path}.loss: unknown loss '{loss}'{suggest(loss, LOSSES)}; available: {', '.join(LOSSES)}")
    if task_cfg.get("mode", "min") not in MODES:
        problems.append(f"{path}.mode: must be 'min' or 'max', got '{task_cfg.get('mode')}'")
    return problems


def task_class(name: str) -> Any:
    if name not in TASKS:
        raise ConfigError(f"task.name: unknown task '{name}'{suggest(name, TASKS)}; available: {', '.join(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)
