"""Tasks: LightningModules that train a built graph (classification, language modelling, sequence to
sequence), registered by name in builder/plugins.py (TASKS) with the roles builder/contract.py binds."""
from __future__ import annotations

from typing import Any

from builder.plugins import TASKS


def task_class(name: str) -> Any:
    return TASKS.entry(name, "task.name").load()
