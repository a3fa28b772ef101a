"""Guards that keep a run's checkpoints usable: atomic checkpoint files, a stop on a non-finite loss, and
signals that end a run cleanly.

A checkpoint is written to a temporary file in the same directory, flushed to disk (fsync) and renamed over
the old one (os.replace is atomic on POSIX), so a process killed in the middle of a save, or a disk that fills
up, leaves the previous last.ckpt intact. A NaN or infinite training loss stops the run before its backward
pass, so the weights and the last checkpoint stay those of the last good step. Ctrl-C and SIGTERM (what
schedulers and `docker stop` send) end the run at the next batch boundary with last.ckpt saved there.
"""
from __future__ import annotations

import errno
import math
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from builder.errors import RunStopped


class Interrupted(RunStopped):
    """Stopped by a signal after saving last.ckpt; the command exits with 128 + the signal's number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class DiskFull(RunStopped):
    """A checkpoint could not be written for lack of space; the previous file is intact."""


class NonFiniteLoss(RunStopped):
    """Training produced a NaN or infinite loss; the message says where and which checkpoint is good."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make checkpoints private to this user
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"cannot write {path}: no space left on the device (or over quota); the previous "
                           f"{path.name} is intact; free some space and resume") from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        atomic_torch_save(checkpoint, path)


class StopOnNonFinite(Callback):
    """Raise NonFiniteLoss as soon as a training loss is NaN or infinite, before it reaches the weights."""

    def __init__(self, last_ckpt: str | Path):
        self.last_ckpt = Path(last_ckpt)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        value = float(loss.detach())
        bad = not math.isfinite(value)
        if trainer.world_size > 1:  # every rank stops, or the others would wait for its gradients forever
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        if math.isfinite(value):
            value = "not finite on another process"
        raise NonFiniteLoss(f"train/loss is {value} at step {trainer.global_step + 1}; training stopped before that "
                            f"step changed the weights, and {self.kept()}. Try a lower optim.lr or "
                            "trainer.gradient_clip_val")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            check_weights(trainer, pl_module, self)

    def kept(self) -> str:
        if self.last_ckpt.is_file():
            step = torch.load(self.last_ckpt, map_location="cpu", weights_only=True).get("global_step", "?")
            return f"the last good checkpoint is {self.last_ckpt} (step {step})"
        return "no checkpoint was written before it"


def check_weights(trainer: L.Trainer, pl_module: L.LightningModule, guard: StopOnNonFinite) -> None:
    """A finite loss can still take a step so large that the weights overflow: before they are evaluated or
    saved, a NaN or infinite weight stops the run the same way a NaN loss does."""
    bad = next((name for name, p in pl_module.named_parameters() if not torch.isfinite(p).all()), None)
    if trainer.world_size > 1:
        bad = "a weight on another process" if trainer.strategy.reduce_boolean_decision(bad is not None, all=False) \
            and bad is None else bad
    if bad is not None:
        raise NonFiniteLoss(f"the weights are not finite after step {trainer.global_step} ({bad}); training "
                            f"stopped before saving them, and {guard.kept()}. Try a lower optim.lr or "
                            "trainer.gradient_clip_val")


class StopOnSignal(Callback):
    """Ctrl-C (SIGINT) and SIGTERM end the run at the next batch boundary: `save(trainer)` writes last.ckpt
    at that step, then Interrupted says so, and `resume=` continues exactly. A second Ctrl-C stops at once.
    With several processes the first to see a signal stops them all at the same step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, save: Any, run_dir: Path):
        self.save, self.run_dir = save, run_dir
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: stop now

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning has set its own SIGTERM handler (which would stop the run without a checkpoint)
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        stop = self.signum is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        self.save(trainer)
        signum = self.signum or signal.SIGTERM
        name = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
        raise Interrupted(f"interrupted by {name} at step {trainer.global_step}; checkpoints/last.ckpt holds that "
                          f"step; resume={self.run_dir} continues", signum)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}
