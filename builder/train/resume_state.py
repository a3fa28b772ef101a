"""What a resumed run needs from its checkpoint besides the weights: the Python, NumPy and torch generator
states (so it continues exactly as the uninterrupted run would have), the logging step realigned, and the
learning-rate schedule of this run's settings (builder/train/resume.py checks which settings may change)."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.optim.lr_scheduler import LambdaLR

from builder.train.internals import align_logging_step


def rng_callback() -> Any:
    # ResumeState is defined in here: its qualified name is the key of its state in the checkpoints written so far
    class ResumeState(Callback):
        """Python, NumPy and torch generator states in every checkpoint (as plain data: weights_only loads), and
        the logging step realigned after a restore."""

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.first = True
            if trainer.ckpt_path:
                follow_new_schedule(trainer, pl_module)

        def on_train_batch_start(self, trainer: Any, pl_module: Any, *args: Any) -> None:
            if getattr(self, "first", False):
                align_logging_step(trainer)
                self.first = False

        def state_dict(self) -> dict[str, Any]:
            kind, keys, pos, has_gauss, gauss = np.random.get_state()
            state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
                     "torch": torch.get_rng_state()}
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                state["cuda"] = torch.cuda.get_rng_state_all()
            return state

        def load_state_dict(self, state: dict[str, Any]) -> None:
            version, internal, gauss = state["python"]
            random.setstate((version, tuple(internal), gauss))
            kind, keys, pos, has_gauss, cached = state["numpy"]
            np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
            torch.set_rng_state(state["torch"])
            if "cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])

    return ResumeState()


def follow_new_schedule(trainer: Any, pl_module: Any) -> None:
    """The restored LR schedule takes this run's numbers (the decay length of `resume=... trainer.max_steps=N`
    with a larger N, a new optim.lr, min_lr, warmup_steps or decay_steps) from the resumed step on; a
    checkpoint brings back the old ones. Same config: same numbers, nothing changes."""
    fresh = pl_module.configure_optimizers()
    new = (fresh.get("lr_scheduler") or {}).get("scheduler") if isinstance(fresh, dict) else None
    old = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
    if not (isinstance(old, LambdaLR) and isinstance(new, LambdaLR)):
        return
    for mine, theirs in zip(old.lr_lambdas, new.lr_lambdas):
        if hasattr(mine, "__dict__") and type(mine) is type(theirs):
            mine.__dict__.update(theirs.__dict__)
    old.base_lrs = list(new.base_lrs)
    for group, base, fn in zip(old.optimizer.param_groups, old.base_lrs, old.lr_lambdas):
        group["initial_lr"], group["lr"] = base, base * fn(old.last_epoch)
