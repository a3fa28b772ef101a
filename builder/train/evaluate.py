"""evaluate(model, cfg): a trained model's validation (or test) metrics on a data config (builder-eval)."""
from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L
import torch

from builder.errors import ConfigError
from builder.train.data import datamodule
from builder.train.tasks import task_class


def evaluate(model: Any, cfg: dict[str, Any], split: str = "val", tokenizer: Any = None) -> dict[str, float]:
    """Run the task's validation (or test) step over that split of the data config; {metric: value}."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no accelerator banner around the results
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs newer torch
    seed = int(cfg.get("seed", 0))  # the run's seed, for anything random in the data module
    L.seed_everything(seed, verbose=False)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    task = task_class(cfg["task"]["name"])(model, cfg)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    run_split = trainer.test if split == "test" else trainer.validate
    data = datamodule(cfg["data"], seed=seed)
    if split == "test" and type(data).test_dataloader is L.LightningDataModule.test_dataloader:
        raise ConfigError(f"split: the {cfg['data']['name']} data source has no test split; evaluate with "
                          "split=val, or on other data with data.* overrides")
    if tokenizer is not None and hasattr(data, "use_tokenizer"):
        data.use_tokenizer(tokenizer)  # the model's own vocabulary, whatever data.path now points at
    results = run_split(task, datamodule=data, verbose=False)
    return {k: float(v) for k, v in sorted(results[0].items())}
