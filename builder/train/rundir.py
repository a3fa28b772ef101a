"""Run directories: where a run writes, the `outputs/latest` link, and the files that describe a run.

A run directory holds config.yaml (resolved), overrides.yaml (the command line), train.log, metrics.csv,
checkpoints/, tokenizer.json (language tasks) and result.yaml (the monitored value, or why it failed).
Its path is, in order: `run_dir=DIR`; the directory of `resume=`; Hydra's job directory;
outputs/<date>/<time> when train(cfg) is called from Python. conf/train.yaml makes Hydra's own run
directory follow the same rule (the `run_dir_for` resolver), so Hydra never creates a second, empty one.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from builder.errors import ConfigError


def register_run_dir_resolver() -> None:
    if not OmegaConf.has_resolver("run_dir_for"):
        OmegaConf.register_new_resolver("run_dir_for", run_dir_for)


def run_dir_for(run_dir: Any, resume: Any, outputs_dir: Any, default: str) -> str:
    """hydra.run.dir: run_dir if given, else the resumed run's directory, else a new dated one of its own."""
    if run_dir:
        return str(run_dir)
    if resume and resume != "auto":
        return str(resume_dir(str(resume), str(outputs_dir)))
    return claim(default)


_claimed: dict[str, str] = {}


def claim(path: str) -> str:
    """`path`, or `path-1`, `path-2`, ...: a directory created here, exclusively, so that runs started in the
    same second (two terminals, a script launching jobs) never share one. The same path asked again in this
    process (Hydra resolves its run directory more than once) gets the same answer."""
    if path not in _claimed:
        candidate, n = Path(path), 0
        while True:
            try:
                candidate.mkdir(parents=True)
                break
            except FileExistsError:
                n += 1
                candidate = Path(f"{path}-{n}")
        _claimed[path] = str(candidate)
    return _claimed[path]


def resume_dir(resume: str, outputs_dir: str = "outputs") -> Path:
    """The run directory `resume=` names: `latest`, a run directory, or a checkpoint file inside one."""
    if resume == "latest":
        link = Path(outputs_dir) / "latest"
        if not link.exists():
            raise ConfigError(f"resume=latest: {link} does not exist (no run has started under {outputs_dir}/ yet)")
        return link.resolve()
    p = Path(resume).expanduser()
    if p.is_file():
        return p.parent.parent if p.parent.name == "checkpoints" else p.parent
    if not p.is_dir():
        raise ConfigError(f"resume: {p} does not exist; give a run directory, a checkpoint file or `latest`")
    return p


def hydra_job() -> tuple[Path | None, list[str], bool]:
    """(Hydra's job directory, the job's command-line overrides, whether this is a multirun) or (None, [], False)."""
    if not HydraConfig.initialized():
        return None, [], False
    hydra = HydraConfig.get()
    out = OmegaConf.select(hydra, "runtime.output_dir")
    multirun = str(OmegaConf.select(hydra, "mode")) == "RunMode.MULTIRUN"
    return (Path(out) if out else None), list(hydra.overrides.task), multirun


def choose_run_dir(cfg: Any) -> Path:
    job_dir, _, multirun = hydra_job()
    if multirun and cfg.get("resume") not in (None, "auto"):
        raise ConfigError("resume: continue one run at a time, without -m (resume=auto suits sweeps on clusters)")
    if cfg.get("run_dir"):
        if multirun:
            raise ConfigError("run_dir: every trial of a multirun needs its own directory; set hydra.sweep.dir instead")
        return Path(cfg.run_dir)
    if cfg.get("resume") and cfg.resume != "auto":
        return resume_dir(str(cfg.resume), str(cfg.get("outputs_dir") or "outputs"))
    if job_dir is not None:
        return job_dir
    root = Path(cfg.get("outputs_dir") or "outputs")
    return Path(claim(str(root / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S"))))


def check_own(run_dir: Path, resume: str | None) -> None:
    """A run directory that already holds another run's checkpoints is continued only on purpose."""
    found = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt")) if not resume else []
    if found:
        raise ConfigError(f"run_dir: {run_dir} already holds a run's checkpoints ({', '.join(found)}); "
                          f"resume={run_dir} continues that run, or choose another run_dir")


def effective_resume(cfg: Any, run_dir: Path) -> str | None:
    """What to resume from: `resume=`, except that `auto` (a requeued cluster job) means this run directory
    when it already holds checkpoints/last.ckpt, and a fresh start otherwise."""
    resume = cfg.get("resume")
    if resume == "auto":
        return str(run_dir) if (run_dir / "checkpoints" / "last.ckpt").is_file() else None
    return str(resume) if resume else None


def point_latest(run_dir: Path, outputs_dir: str | Path) -> Path | None:
    """Make <outputs_dir>/latest a relative symlink to run_dir, replaced atomically (only for runs inside it)."""
    root, target = Path(outputs_dir).resolve(), run_dir.resolve()
    if root not in target.parents:
        return None
    link = root / "latest"
    tmp = root / f".latest.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, root), tmp)
    os.replace(tmp, link)  # rename(2) swaps the link itself: readers see the old or the new target, never none
    return link


def write_overrides(run_dir: Path, overrides: list[str], resumed: bool) -> None:
    """overrides.yaml: the command line; a resume adds its own below the original run's."""
    file = run_dir / "overrides.yaml"
    if resumed and file.is_file():
        before = list(OmegaConf.load(file))
        overrides = before + [o for o in overrides if o not in before]
    OmegaConf.save(OmegaConf.create(list(overrides)), file)


def write_result(run_dir: Path, **fields: Any) -> None:
    """result.yaml: what a sweep summary reads (status, monitor, mode, value, steps, seconds, error)."""
    OmegaConf.save(OmegaConf.create(fields), run_dir / "result.yaml")
