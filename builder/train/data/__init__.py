"""Data sources by name (`data.name`): LightningDataModules built as Class(data_cfg, seed=seed).

The names live in builder/plugins.py (DATA), with what each provides (features, a tokenizer, a tokenizer
pair); a user registers more with `@builder.data_source(...)`. This module stays free of torch so a misspelt
name fails before anything heavy is imported.
"""
from __future__ import annotations

from typing import Any

from builder.plugins import DATA


def datamodule(data_cfg: dict[str, Any], seed: int = 0) -> Any:
    """The data module for a (resolved, plain) data config; `seed` fixes the shuffling order."""
    return DATA.entry(data_cfg.get("name"), "data.name").load()(data_cfg, seed=seed)
