"""Shared fixtures: configs composed from conf/ exactly as builder-train composes them, and one tiny
trained toy classifier shared by every test that needs a run directory (Lightning is imported once)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
sys.path.insert(0, str(ROOT / "tests"))  # helpers shared by tests and benchmarks (fuzzing.py)

# Small and quiet: a few hundred samples, no progress bar or model table, no Bayes estimate.
TINY = [
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.bayes_samples=0",
]


@pytest.fixture(scope="session")
def compose():
    """compose(overrides) -> the DictConfig builder-train would see (without Hydra's run directory)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from builder.config import register_resolvers
    register_resolvers()

    def make(overrides: list[str] | tuple[str, ...] = ()):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="train", overrides=list(overrides))
    return make


@pytest.fixture(scope="session")
def train_tiny(compose, tmp_path_factory):
    """train_tiny(overrides) -> (run_dir, monitored value): an in-process run in a fresh directory."""
    from builder.train.run import train

    def run(overrides: list[str] | tuple[str, ...] = ()):
        run_dir = tmp_path_factory.mktemp("run")
        overrides = ["experiment=toy_classifier", *TINY, f"run_dir={run_dir}", *overrides]
        return run_dir, train(compose(overrides), overrides=overrides)
    return run


@pytest.fixture(scope="session")
def toy_run(train_tiny):
    """The toy classifier trained once on a small data set: SimpleNamespace(dir, score)."""
    run_dir, score = train_tiny(["data.n_train=1000", "data.n_val=1000", "trainer.max_epochs=6"])
    return SimpleNamespace(dir=run_dir, score=score)


@pytest.fixture(scope="session")
def cli_env():
    """Environment for subprocess CLI checks: the project importable without installation."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("HYDRA_FULL_ERROR", None)
    return SimpleNamespace(env=env, python=sys.executable, cwd=ROOT)
