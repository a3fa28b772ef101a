"""Resuming a run: `resume=RUN_DIR | latest | FILE.ckpt` continues from the run's checkpoints/last.ckpt;
`resume=auto` continues the run directory's own last.ckpt when there is one (a requeued cluster job).

The checkpoint is checked before anything is written, each problem one line: a file that is not a complete
checkpoint, one without training state, one trained with a different model config, or a changed setting a
resume cannot apply (MAY_CHANGE lists what it can). The command line of the original run is reused
(`with_original_overrides`), so `builder-train resume=latest` alone continues it, and
`builder-train resume=latest trainer.max_steps=4000 optim.lr=3e-4` extends it with a new schedule. Random number generator states travel in
the checkpoint (RngState), and the batch order is a function of the step (builder/train/data/order.py), so a
resumed run continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import OmegaConf

from builder.serve.checkpoint import CheckpointError


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def with_original_overrides(args: list[str], outputs_dir: str = "outputs") -> list[str]:
    """Command-line args with the resumed run's overrides.yaml in front (new values win, key by key)."""
    from builder.train.rundir import resume_dir
    resume = next((a.split("=", 1)[1] for a in args if override_key(a) == "resume"), None)
    if not resume or resume == "auto":
        return args
    file = resume_dir(resume, outputs_dir) / "overrides.yaml"
    if not file.is_file():
        return args
    given = {override_key(a) for a in args if not a.startswith("-")}
    kept = [o for o in OmegaConf.load(file) if override_key(str(o)) not in given and override_key(str(o)) != "run_dir"]
    return [str(o) for o in kept] + args


class Resumed(NamedTuple):
    path: Path  # the checkpoint a resume continues from
    step: int  # its global step
    config: dict[str, Any]  # the config it was trained with


# What a resume may change, applied from the resumed step on: how much further to train, how the learning
# rate goes on from here, and what is shown, logged or drawn. Anything else (the model, the data and its order,
# the seed, the loss, the optimiser) would make the run's past and its future two different runs: refused.
MAY_CHANGE = ("trainer", "logger", "optim.lr", "optim.min_lr", "optim.warmup_steps", "optim.decay_steps",
              "task.sample_tokens", "task.sample_prompt", "task.sample_temperature", "task.sample_top_k",
              "task.show_examples", "data.num_workers", "data.cache_dir", "attention_maps", "threads",
              "ckpt_every_n_steps", "compile", "run_dir", "resume", "outputs_dir", "hydra")


def open_resume(run_dir: Path, resume: str) -> Resumed:
    """The checkpoint to continue from, after checking it is a complete one with training state."""
    from builder.serve.checkpoint import read_checkpoint
    p = Path(resume).expanduser()
    file = p if p.is_file() else run_dir / "checkpoints" / "last.ckpt"
    if not file.is_file():
        raise CheckpointError(f"resume: {run_dir} has no checkpoints/last.ckpt to continue from")
    try:
        ckpt = read_checkpoint(file)  # a truncated or foreign file: one line
    except CheckpointError as e:
        raise CheckpointError("resume: " + e.problems[0].removeprefix("ckpt: ")) from None
    if "loops" not in ckpt or "optimizer_states" not in ckpt:
        raise CheckpointError(f"resume: {file} holds weights only, no training state to continue from")
    return Resumed(file, int(ckpt.get("global_step", 0)), ckpt["builder"]["config"])


def check_changes(resumed: Resumed, cfg: Any) -> Any:
    """`cfg` for continuing `resumed`: a null seed takes the run's own; a changed model or any change that
    MAY_CHANGE does not list is refused in one line (before anything is written)."""
    from builder.graph.prepare import prepare_model_config
    before = resumed.config
    if cfg.get("seed") is None:
        cfg.seed = before.get("seed")
    stored = before.get("model", {})
    autos = {k: stored[k] for k, v in (OmegaConf.to_container(cfg.model, resolve=False) or {}).items()
             if v == "auto" and k in stored}
    diff = first_difference(stored, prepare_model_config(cfg, sizes=autos), "model")
    if diff:
        raise model_changed(resumed.path, diff)
    now = OmegaConf.to_container(cfg, resolve=True)
    refused = [d for key in before if key != "model" and key in now
               for d in differences(before[key], now[key], key, missing_there=False)
               if not any(d.startswith(m + ".") or d.startswith(m + " ") for m in MAY_CHANGE)]
    if refused:
        raise CheckpointError(
            f"resume: {resumed.path} was trained with settings a resume cannot change: {', '.join(refused)}; a "
            f"resume may change {', '.join(m + ('.*' if m in ('trainer', 'logger') else '') for m in MAY_CHANGE[:-4])}"
            "; start a new run to change the rest")
    return cfg


def model_changed(file: Path, diff: str) -> CheckpointError:
    return CheckpointError(f"resume: {file} was trained with a different model ({diff}); resume with the original "
                           f"model settings (see config.yaml beside it) or start a new run")


def first_difference(a: Any, b: Any, path: str) -> str | None:
    return next(iter(differences(a, b, path)), None)


def differences(a: Any, b: Any, path: str, missing_there: bool = True) -> list[str]:
    """Each place where `b` differs from `a`, as "path is A there and B here"; keys `a` lacks count only
    with missing_there (a setting added since `a` was written is not a change of it)."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                if (key in a and a[key] is not None) or (key not in a and missing_there):
                    found.append(f"{path}.{key} is {'missing' if key not in a else repr(a[key])} there and "
                                 f"{'missing' if key not in b else repr(b[key])} here")
            else:
                found += differences(a[key], b[key], f"{path}.{key}", missing_there)
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]", missing_there)]
    return [] if a == b else [f"{path} is {a!r} there and {b!r} here"]


def rng_callback() -> Any:
    import numpy as np
    import torch
    from lightning.pytorch.callbacks import Callback

    class ResumeState(Callback):
        """Python, NumPy and torch generator states in every checkpoint (as plain data: weights_only loads), and
        the logging step realigned after a restore."""

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.first = True
            if trainer.ckpt_path:
                follow_new_schedule(trainer, pl_module)

        def on_train_batch_start(self, trainer: Any, pl_module: Any, *args: Any) -> None:
            if getattr(self, "first", False):
                from builder.train.internals import align_logging_step
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
    from torch.optim.lr_scheduler import LambdaLR
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
