"""Data modules by name: `data.name` in the config -> a LightningDataModule built from the data config.

Looked up by name, never by an import path, so that evaluating a checkpoint cannot import arbitrary code.
This module stays free of torch so a misspelt name fails before anything heavy is imported.
"""
from __future__ import annotations

import importlib
from typing import Any

from builder.errors import ConfigError, suggest

DATASETS = {
    "leaf_flower": "builder.train.data.leaf_flower:LeafFlowerData",
    "text": "builder.train.data.text:TextData",
    "numbers": "builder.train.data.numbers:NumbersData",
    "parallel": "builder.train.data.parallel:ParallelData",
}


def check_data(data_cfg: Any, path: str = "data") -> list[str]:
    name = data_cfg.get("name") if hasattr(data_cfg, "get") else None
    if name not in DATASETS:
        return [f"{path}.name: unknown data set '{name}'{suggest(name, DATASETS)}; available: {', '.join(DATASETS)}"]
    return []


def datamodule(data_cfg: dict[str, Any], seed: int = 0) -> Any:
    """The data module for a (resolved, plain) data config; `seed` fixes the shuffling order."""
    problems = check_data(data_cfg)
    if problems:
        raise ConfigError(problems)
    module, cls = DATASETS[data_cfg["name"]].split(":")
    return getattr(importlib.import_module(module), cls)(data_cfg, seed=seed)
