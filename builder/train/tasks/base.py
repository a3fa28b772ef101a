"""The task base class: a LightningModule that trains a built graph model.

A task turns a batch into (loss, count, metrics); the base class does the rest: logging (loss and
throughput on the progress bar), the optimiser and schedule, and the config stored in every checkpoint.
Subclasses (classification, language modelling, sequence-to-sequence) override `step` and a few class
attributes.
"""
from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from builder.contract import Roles, output_vocabulary, vocabulary
from builder.errors import ConfigError
from builder.train.flops import flops_per_token, peak_flops
from builder.train.internals import logs_this_step
from builder.train.optim import build_optimizer

CHECKPOINT_FORMAT = 1
LOSSES = {"cross_entropy": F.cross_entropy, "mse": F.mse_loss, "l1": F.l1_loss}


class Task(L.LightningModule):
    name = "task"
    monitor, mode = "val/loss", "min"  # defaults; the task config's `monitor`/`mode` take precedence
    unit = "samples"  # throughput is reported as <unit>/s
    metrics: tuple[str, ...] = ()  # validation metrics besides val/loss, logged as val/<name>

    def __init__(self, model: nn.Module, cfg: dict[str, Any]):
        """`cfg` is the whole run config, resolved to plain data; it goes into every checkpoint."""
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.task_cfg = cfg["task"]
        self.monitor = self.task_cfg.get("monitor") or self.monitor
        self.mode = self.task_cfg.get("mode") or self.mode
        self.loss_name = self.task_cfg.get("loss") or "cross_entropy"
        self.roles = Roles(self.task_cfg, model.spec)  # the task's roles -> this model's input and output names
        # the compiled wrapper is kept outside the module tree so parameter names (and checkpoints) stay plain
        self.__dict__["_run"] = torch.compile(model) if cfg.get("compile") else model
        self._tick: float | None = None
        self._rate: float | None = None
        self._peak: float | None = None  # the device's FLOP/s (0: unknown), found at the first step
        self._flops: dict[int, float] = {}  # training FLOPs per unit, by context length

    def run_model(self, role: str = "logits", **by_role: Any) -> Any:
        """The model's output for `role`, fed its inputs by role: run_model(tokens=x) feeds x to the input
        task.inputs.tokens names and returns the output task.outputs.logits names."""
        return self.roles.read(self._run(**self.roles.feed(**by_role)), role)

    # --- per task -------------------------------------------------------------------------------------

    def step(self, batch: Any) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        """(mean loss, number of samples or tokens, {metric: value averaged over the batch})."""
        raise NotImplementedError

    def context(self, batch: Any) -> int:
        """The sequence length a batch's attention spans (0 for models without sequences)."""
        return 0

    def columns(self) -> list[str]:
        """metrics.csv columns, in order (anything else logged is appended)."""
        train = ["epoch", "train/loss", f"train/{self.unit}_per_s", "lr"]
        return train + ["val/loss"] + [f"val/{m}" for m in self.metrics]

    # --- Lightning hooks ------------------------------------------------------------------------------

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, n, _ = self.step(batch)
        self._measure_throughput(n)
        # a self.log call costs Lightning about 1 ms (a step of a small model takes 50), and the loggers write only
        # every log_every_n_steps: these values are logged for the steps they write (the progress bar shows
        # each step's loss from the step's output, builder/train/internals.py)
        if logs_this_step(self.trainer):
            self.log("train/loss", loss, prog_bar=True, batch_size=n)
            self._log_throughput(n, self.context(batch))
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        if self.trainer.world_size > 1:  # an epoch's last batch, split unevenly across ranks (builder/train/data/order.py)
            weight = getattr(getattr(self.trainer.train_dataloader, "batch_sampler", None), "loss_weight", None)
            if weight is not None and weight(batch_idx) != 1.0:
                return loss * weight(batch_idx)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, n, metrics = self.step(batch)
        # batch_size weights the epoch mean, so val/acc is the exact accuracy over the whole set
        self.log("val/loss", loss, prog_bar=True, batch_size=n)
        for key, value in metrics.items():
            self.log(f"val/{key}", value, prog_bar=True, batch_size=n)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        loss, n, metrics = self.step(batch)
        self.log("test/loss", loss, batch_size=n)
        for key, value in metrics.items():
            self.log(f"test/{key}", value, batch_size=n)

    def on_train_epoch_start(self) -> None:
        self._tick = None  # the gap across validation is not training time

    def _measure_throughput(self, n: int) -> None:
        """Units (samples or tokens) per second, smoothed over batches."""
        now = time.perf_counter()
        if self._tick is not None:
            rate = n / max(now - self._tick, 1e-9)
            self._rate = rate if self._rate is None else 0.9 * self._rate + 0.1 * rate  # smooth batch-to-batch jitter
        self._tick = now

    def _log_throughput(self, n: int, context: int = 0) -> None:
        """The throughput; with a known peak, model FLOPs utilisation (builder/train/flops.py)."""
        if self._rate is None:
            return
        self.log(f"train/{self.unit}_per_s", self._rate, prog_bar=True, batch_size=n)
        if self._peak is None:
            self._peak = peak_flops(self.cfg["trainer"], self.device) or 0.0
        if self._peak:
            if context not in self._flops:
                self._flops[context] = flops_per_token(self.model, context)
            self.log("train/mfu", self._rate * self._flops[context] / self._peak, prog_bar=True, batch_size=n)

    def configure_optimizers(self) -> dict[str, Any]:
        total = self.trainer.estimated_stepping_batches
        total = int(total) if math.isfinite(total) else 10**12  # no known end: warmup, then (nearly) flat
        # Lightning's mixed-precision plugin refuses to clip the gradients of an optimizer that unscales them
        # itself, as fused ones do: under autocast the optimizer keeps torch's default
        fuse = "mixed" not in str(self.trainer.precision)
        optimizer, scheduler = build_optimizer(self.model, self.cfg["optim"], total, fuse=fuse)
        # "step": LambdaLR advances once per optimizer step, so accumulation does not change the schedule
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # plain data only: the checkpoint must load with torch.load(weights_only=True)
        checkpoint["builder"] = {
            "format": CHECKPOINT_FORMAT,
            "task": self.task_cfg["name"],
            "config": self.cfg,
            "imports": list(self.cfg["model"].get("imports") or []),
        }


def check_vocabulary(spec: Any, roles: Roles, role: str, size: str, tokens: int, predicted: bool = True) -> None:
    """A tokenizer of `tokens` ids fits the embedding table of the input `role` is fed to and, when the model
    predicts those ids (`predicted`), the logits; else a one-line ConfigError naming the model variable that
    the data's `size` fills."""
    name = roles.inputs[role]
    tables = {f"the embedding of input '{name}'": vocabulary(spec, name)}
    if predicted:
        tables[f"the output '{roles.outputs['logits']}'"] = output_vocabulary(spec, roles.outputs["logits"])
    variable = roles.sizes.get(size)
    for where, rows in tables.items():
        if rows is not None and tokens > rows:
            fix = f"set model.{variable}=auto or a larger size" if variable else "make the table larger"
            raise ConfigError(f"model.{variable or 'nodes'}: {where} has {rows} rows, fewer than the tokenizer's "
                              f"{tokens} tokens; {fix}")
