"""Resuming a run: `resume=RUN_DIR | latest | FILE.ckpt` continues from the run's checkpoints/last.ckpt;
`resume=auto` continues the run directory's own last.ckpt when there is one (a requeued cluster job).

The checkpoint is checked before anything is written, each problem one line: a file that is not a complete
checkpoint, one without training state, one trained with a different model config, or a changed setting a
resume cannot apply (MAY_CHANGE lists what it can). The command line of the original run is reused
(`with_original_overrides`), so `builder-train resume=latest` alone continues it, and
`builder-train resume=latest trainer.max_steps=4000 optim.lr=3e-4` extends it with a new schedule. Random number generator states travel in
the checkpoint (builder/train/resume_state.py), and the batch order is a function of the step
(builder/train/data/order.py), so a resumed run continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import OmegaConf

from builder.graph.prepare import prepare_model_config
from builder.serve.checkpoint import CheckpointError, read_checkpoint
from builder.train.rundir import resume_dir


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def with_original_overrides(args: list[str], outputs_dir: str = "outputs") -> list[str]:
    """Command-line args with the resumed run's overrides.yaml in front (new values win, key by key)."""
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
              "task.sample_tokens", "task.sample_after", "task.sample_prompt", "task.sample_temperature",
              "task.sample_top_k",
              "task.show_examples", "data.num_workers", "data.cache_dir", "attention_maps", "threads",
              "ckpt_every_n_steps", "compile", "run_dir", "resume", "outputs_dir", "hydra")


def open_resume(run_dir: Path, resume: str) -> Resumed:
    """The checkpoint to continue from, after checking it is a complete one with training state."""
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
