"""Adapters (builder/graph/adapters.py) in a training run: the source's weights loaded under them (`init_from`),
and checkpoints that hold the adapters alone (`adapters.save=adapters_only`). Their settings and targets are
checked with the config (builder/train/init_from.py, builder/train/check.py)."""
from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

from builder.graph import adapters
from builder.serve import checkpoint


def starting_weights(model: Any, cfg: dict[str, Any], resumed: bool, rank0: bool) -> tuple[Any, list[Any]]:
    """The model with the source's weights (unless a resume restores them all) and the adapters on it; the
    callbacks this needs (AdaptersOnly)."""
    section = cfg.get("adapters") or {}
    only = adapters.enabled(section) and section.get("save") == "adapters_only"
    if cfg.get("init_from") and (only or not resumed):
        base = checkpoint.load(cfg["init_from"], allow_imports=True)  # imports were checked by apply()
        model.load_state_dict(adapters.merged_state(base.model), strict=True)
        del base
    model = adapters.apply(model, section)
    if rank0 and (cfg.get("init_from") or adapters.enabled(section)):
        origin = f"; weights from {cfg['init_from']}" if cfg.get("init_from") else ""
        print(f"model: {adapters.describe(model, section)}{origin}", flush=True)
    return model, [AdaptersOnly()] if only else []


class AdaptersOnly(Callback):
    """Checkpoints hold the adapters' weights alone (the frozen base is init_from's)."""
    partial = True  # Run.fit: such a checkpoint restores with strict=False

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if adapters.is_adapter_key(k)}
