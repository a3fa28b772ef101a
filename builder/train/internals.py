"""Every use of Lightning's and Hydra's private attributes, in one place: when a release moves them, this is
the file to change (tests/test_distributed.py, test_resume.py and test_sweeps.py exercise each of them).

- the launcher of a strategy, replaced so that extra processes train a config (builder/train/launch.py),
  and the threads per process it sets;
- the data-parallel size of ModelParallelStrategy, set for pure FSDP;
- the timeout of torch's process groups, shortened once the processes have all started;
- the fit loop's counters: batches of this epoch already trained (a resumable data order), and the logging
  step realigned after a restore;
- whether the loggers write this batch's values (values logged on other batches are not written);
- the Rich progress bar, counting the run's optimizer steps;
- Hydra's basic sweeper, which lists the trials of a grid.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Mapping

import lightning as L
import torch
import torch.distributed.distributed_c10d as c10d
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from lightning.fabric.utilities.distributed import _set_num_threads_if_needed
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

SubprocessScriptLauncher = _SubprocessScriptLauncher


def set_threads_for(processes: int) -> None:
    """Torch threads per process, as Lightning's launcher sets them, unless OMP_NUM_THREADS is set."""
    _set_num_threads_if_needed(num_processes=processes)


def launcher(strategy: Any) -> Any:
    return getattr(strategy, "_launcher", None)


def set_launcher(strategy: Any, new: Any) -> None:
    strategy._launcher = new


def set_parallel_sizes(strategy: Any, data: int, tensor: int) -> None:
    """ModelParallelStrategy's data- and tensor-parallel sizes (it otherwise asks for both)."""
    strategy._data_parallel_size, strategy._tensor_parallel_size = data, tensor


def set_group_timeouts(timeout: timedelta) -> None:
    """The timeout of every process group this process belongs to (gloo and NCCL), for collectives from now on;
    FSDP's mesh has groups of its own beside the default one."""
    for group in list(c10d._world.pg_map):
        c10d._set_pg_timeout(timeout, group)


def batches_done_this_epoch(trainer: Any) -> int:
    """Batches of the current epoch already trained: 0 at an epoch start, k after a restore mid-epoch."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)


def align_logging_step(trainer: Any) -> None:
    """Lightning counts logging steps apart from global_step and, restoring a checkpoint saved after a
    mid-training validation, ends one off; before any batch the two are equal."""
    trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step


def logs_this_step(trainer: Any) -> bool:
    """Whether Lightning hands this training batch's logged values to the loggers: every log_every_n_steps
    batches and when the run stops (asked during the batch, as Lightning asks after it); every batch when
    log_every_n_steps is 0 (no logger writes, and the progress bar shows the values)."""
    return trainer.log_every_n_steps == 0 or bool(trainer._logger_connector.should_update_logs)


def grid_trials(parsed: list[Any]) -> list[list[str]]:
    """Every trial of a grid sweep, as Hydra's basic sweeper would launch them."""
    return [list(t) for batch in BasicSweeper.split_arguments(parsed, None) for t in batch]


class ProgressBar(RichProgressBar):
    """One bar for the whole run, counting optimizer steps (so `accumulate_grad_batches` and a resumed run
    count right, and the time left is the run's), with short names: `loss 0.123  samples/s 31,000`."""

    @property
    def total_train_batches(self) -> int | float:
        total = self.trainer.estimated_stepping_batches  # max_steps, or the epochs' optimizer steps
        return total if total != float("inf") else self.trainer.num_training_batches

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.train_progress_bar_id is None or self.progress is None:
            super().on_train_epoch_start(trainer, pl_module)
            self._update(self.train_progress_bar_id, trainer.global_step)
        else:  # the same bar goes on; only the epoch in its description changes
            self.progress.update(self.train_progress_bar_id, description=self._get_train_description(
                trainer.current_epoch))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           *args: object) -> None:
        # each step's loss, from the step's output: the task logs train/loss only on the steps loggers write
        self.loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, object]:
        items = {}
        for key, value in super().get_metrics(trainer, pl_module).items():
            if key.endswith("_per_s"):  # train/samples_per_s -> samples/s, as a whole number
                items[key.split("/")[-1].replace("_per_s", "/s")] = f"{float(value):,.0f}"
            elif key == "train/mfu":
                items["mfu"] = f"{100 * float(value):.1f}%"
            else:
                items[key.removeprefix("train/")] = value
        loss = getattr(self, "loss", None)
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:  # this step's, not the last logged step's
            items = {"loss": float(loss.detach()), **{k: v for k, v in items.items() if k != "loss"}}
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs < 0 < trainer.max_steps:
            return f"Training to step {trainer.max_steps:,}"  # a step budget: "Epoch 0/-2" would mean nothing
        return super()._get_train_description(current_epoch)
