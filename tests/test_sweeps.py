"""Sweeps through builder-train -m (in this process, in a temporary working directory): every trial checked
before the first starts, Optuna failures recorded without stopping the search, a summary table and CSV, and
the trials' curves in one picture."""
from __future__ import annotations

import csv
import sys

import pytest

QUIET = ["experiment=toy_classifier", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         "data.bayes_samples=0", "data.n_train=256", "data.n_val=128", "trainer.log_every_n_steps=1",
         "hydra/job_logging=disabled",
         "hydra/hydra_logging=disabled"]


@pytest.fixture
def builder_train(monkeypatch, tmp_path):
    """builder_train(*args) runs the command in tmp_path; returns its exit code (0 when it returns)."""
    from hydra.core.global_hydra import GlobalHydra

    import builder.cli.train as cli
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["builder-train", *args])
        try:
            cli.main()
            return 0
        except SystemExit as e:
            return int(e.code or 0)
        finally:
            GlobalHydra.instance().clear()
    return run


def read_summary(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_bad_grid_trials_stop_the_sweep_before_launch(builder_train, tmp_path, capsys):
    code = builder_train("-m", *QUIET, "model.activation=relu,relux", "model.in_features=4,5")
    err = capsys.readouterr().err
    assert code == 2
    assert "builder-train: 3 problems in the sweep; no trial was started:" in err
    assert "trial model.activation=relux model.in_features=4: model.nodes.act.block: unknown block 'relux' " \
           "(did you mean 'relu'?)" in err
    assert "trial model.activation=relu model.in_features=5: model.nodes.norm: input_norm `norm`:" in err  # shapes
    assert not (tmp_path / "outputs").exists()  # nothing launched, no directory made


def test_grid_runs_every_trial_and_summarizes_best_first(builder_train, tmp_path, capsys):
    code = builder_train("-m", *QUIET, "optim.lr=0.002,0.05", "trainer.max_steps=12", "hydra.sweep.dir=grid")
    out = capsys.readouterr().out
    assert code == 0
    assert "2 trial configurations checked (the whole grid)" in out
    rows = read_summary(tmp_path / "grid" / "summary.csv")
    assert sorted(r["optim.lr"] for r in rows) == ["0.002", "0.05"]
    assert float(rows[0]["val/acc"]) >= float(rows[1]["val/acc"])  # best first
    assert {r["status"] for r in rows} == {"completed"}
    assert out.index("sweep summary (2 trials, best first):") < out.index("summary: grid/summary.csv")
    assert "curves: grid/compare.png" in out  # the trials' curves beside summary.csv
    from PIL import Image
    assert Image.open(tmp_path / "grid" / "compare.png").size[0] > 800


def test_optuna_checks_each_choice_up_front(builder_train, tmp_path, capsys):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    code = builder_train("-m", *QUIET, "sweep=toy_optuna", "hydra.sweeper.params=null",
                         "model.activation=choice(relu,relux)", "optim.lr=interval(0.001,0.1)")
    assert code == 2
    assert "trial model.activation=relux optim.lr=0.001: model.nodes.act.block: unknown block 'relux'" \
           in capsys.readouterr().err


def test_optuna_records_a_failed_trial_and_goes_on(builder_train, tmp_path, capsys):
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "study"
    # grid sampler: both learning rates are tried; 1e30 passes every check but its loss becomes NaN
    code = builder_train("-m", *QUIET, "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2",
                         "hydra.sweeper.direction=maximize", "hydra.sweeper.max_failure_rate=1.0",
                         "hydra.sweeper.study_name=toy_optuna", f"hydra.sweeper.storage=sqlite:///{sweep}/optuna.db",
                         "optim.lr=choice(0.05,1e30)", "trainer.max_steps=10", f"hydra.sweep.dir={sweep}")
    out = capsys.readouterr().out
    assert code == 0, out
    rows = read_summary(sweep / "summary.csv")
    assert [(r["optim.lr"], r["status"]) for r in rows] == [("0.05", "completed"), ("1e+30", "failed")]
    assert rows[1]["error"].startswith("train/loss is nan at step")
    study = optuna.load_study(study_name="toy_optuna", storage=f"sqlite:///{sweep}/optuna.db")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "FAIL"]


def test_submitit_local_launcher(builder_train, tmp_path, capsys):
    """conf/cluster/local.yaml: the SLURM path (Hydra's submitit launcher), each job a local process."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    code = builder_train("-m", *QUIET, "cluster=local", "trainer.max_steps=4", "hydra.sweep.dir=sub")
    assert code == 0
    rows = read_summary(tmp_path / "sub" / "summary.csv")
    assert len(rows) == 1 and rows[0]["status"] == "completed" and rows[0]["steps"] == "4"
