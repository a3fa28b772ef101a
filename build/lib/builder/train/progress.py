"""A run's progress: the progress bar, a validation at the final step, and checkpoints/last.ckpt.

Lightning validates at epoch ends (or every N batches); a run that stops at max_steps between two
validations would end unscored and leave best.ckpt and last.ckpt behind the final weights.
ValidateAtEnd asks for one more validation at the last step; LastCheckpoint also saves when training ends
and, optionally, every N optimizer steps.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, Checkpoint, RichProgressBar


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

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
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
            else:
                items[key.removeprefix("train/")] = value
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs < 0 < trainer.max_steps:
            return f"Training to step {trainer.max_steps:,}"  # a step budget: "Epoch 0/-2" would mean nothing
        return super()._get_train_description(current_epoch)


class ValidateAtEnd(Callback):
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        # a stop request makes Lightning validate right after this batch (then ModelCheckpoint sees the score)
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class LastCheckpoint(Checkpoint):
    """A Checkpoint, so Lightning runs it after ModelCheckpoint, whose best score then already counts this
    validation: a run resumed from last.ckpt compares its next scores with the true best."""

    def __init__(self, path: str | Path, every_n_steps: int | None = None):
        self.path, self.every = Path(path), every_n_steps
        self._saved_at = -1

    def save(self, trainer: L.Trainer) -> None:
        if trainer.global_step != self._saved_at:
            trainer.save_checkpoint(self.path, weights_only=False)  # full state: it can resume a run
            self._saved_at = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        # global_step counts optimizer steps, so under gradient accumulation this fires once per N real steps
        if self.every and trainer.global_step % self.every == 0:
            self.save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)
