"""The model config as it will be built: resolved to plain data, with `auto` sizes filled in.

A variable set to `auto` (for example `vocab_size: auto`) is filled in by the task from its data (the
tokenizer's vocabulary) before the model is built; a plan made without data uses a placeholder size.
"""
from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from builder.config import resolve

PLACEHOLDER_SIZE = 256


def prepare_model_config(cfg: Any, sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """Resolve `cfg.model` to plain data; `auto` variables take `sizes[name]` (or a placeholder)."""
    if not OmegaConf.is_dict(cfg.model):
        return cfg.model if not OmegaConf.is_config(cfg.model) else OmegaConf.to_container(cfg.model)  # reported
    raw = OmegaConf.to_container(cfg.model, resolve=False)
    autos = [k for k, v in raw.items() if v == "auto"]
    if autos:
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
        for key in autos:
            cfg.model[key] = (sizes or {}).get(key, PLACEHOLDER_SIZE)
    return resolve(cfg.model, "model")
