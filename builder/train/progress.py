"""A run's progress: a validation at the final step, and checkpoints/last.ckpt (the progress bar, which
adapts Lightning's private methods, is in builder/train/internals.py).

Lightning validates at epoch ends (or every N batches); a run that stops at max_steps between two
validations would end unscored and leave best.ckpt and last.ckpt behind the final weights.
ValidateAtEnd asks for one more validation at the last step; LastCheckpoint also saves when training ends
and, optionally, every N optimizer steps.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, Checkpoint

from builder.train.safety import StopOnNonFinite, check_weights


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
            guard = next((c for c in trainer.callbacks if isinstance(c, StopOnNonFinite)), None)
            if guard is not None:
                check_weights(trainer, trainer.lightning_module, guard)
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
