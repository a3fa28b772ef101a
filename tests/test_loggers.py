"""Loggers as a config group: several at once, TensorBoard event files and offline W&B files in the run
directory, the same W&B run continued on resume, and one-line errors for unknown or missing loggers."""
from __future__ import annotations

import importlib.util

import pytest

from builder.errors import ConfigError

TINY = ["experiment=toy_classifier", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "data.bayes_samples=0", "data.n_train=256", "data.n_val=64", "trainer.log_every_n_steps=1"]


def test_group_selects_one_several_or_none(compose):
    assert set(compose(["logger=[tensorboard,wandb]"]).logger) == {"tensorboard", "wandb"}
    assert set(compose([]).logger) == {"csv"}
    assert dict(compose(["logger=none"]).logger) == {}
    assert compose(["logger=wandb", "logger.wandb.project=p"]).logger.wandb.project == "p"


def test_unknown_and_missing_loggers_are_one_line(tmp_path):
    from builder.train.loggers import check_loggers, make_loggers
    assert check_loggers({"tensorbord": {}}) == [
        "logger.tensorbord: unknown logger; available: csv, tensorboard, wandb, mlflow "
        "(or a mapping with a Lightning logger's _target_)"]
    if importlib.util.find_spec("mlflow") is None:
        message = r"^logger.mlflow: needs the mlflow package \(pip install 'builder\[mlflow\]'\)$"
        with pytest.raises(ConfigError, match=message):
            make_loggers({"mlflow": {}}, tmp_path, [])


def test_wandb_mode_auto(monkeypatch, tmp_path):
    from builder.train.loggers import wandb_mode
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("auto") == "disabled"
    assert wandb_mode("online") == "online"


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None or importlib.util.find_spec("tensorboard") is None,
                    reason="needs wandb and tensorboard")
def test_tensorboard_and_offline_wandb_files_and_resume(compose, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from builder.train.run import train
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    overrides = [*TINY, "trainer.max_steps=6", "logger=[tensorboard,wandb]", f"run_dir={run}"]
    train(compose(overrides))
    assert (run / "metrics.csv").is_file()  # always, next to the dashboards
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    assert "train/loss" in events.Tags()["scalars"] and "val/acc" in events.Tags()["scalars"]
    assert any(tag.startswith("model/plan") for tag in events.Tags()["tensors"])  # the plan table, as text
    run_id = (run / "wandb_id.txt").read_text().strip()
    offline = sorted((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))

    train(compose([*overrides[:-2], "trainer.max_steps=10", "logger=[tensorboard,wandb]", f"run_dir={run}",
                   f"resume={run}"]))
    assert (run / "wandb_id.txt").read_text().strip() == run_id
    assert len(sorted((run / "wandb").glob(f"offline-run-*-{run_id}"))) == 2  # the same W&B run, continued
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one directory, both sessions
