"""A run owns its directory: runs started in the same second get their own, `latest` points at a run whose
config is written, and a directory holding another run's checkpoints is continued only with resume=."""
from __future__ import annotations

import subprocess

import pytest
from omegaconf import OmegaConf

from builder.errors import ConfigError

TOY = ["experiment=toy_classifier", "data.bayes_samples=0", "data.n_train=128", "data.n_val=64",
       "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def test_runs_started_in_the_same_second_never_share_a_directory(cli_env, tmp_path):
    cmd = [cli_env.python, "-m", "builder.cli.train", *TOY, f"outputs_dir={tmp_path / 'outputs'}"]
    procs = [subprocess.Popen([*cmd, f"seed={i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=cli_env.env, cwd=tmp_path) for i in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = sorted(p.parent for p in (tmp_path / "outputs").glob("*/*/result.yaml"))
    assert len(runs) == 2
    assert sorted(OmegaConf.load(r / "config.yaml").seed for r in runs) == [0, 1]  # each its own files
    latest = (tmp_path / "outputs" / "latest").resolve()
    assert latest in [r.resolve() for r in runs] and (latest / "config.yaml").is_file()


def test_claim_gives_each_caller_its_own_directory(tmp_path, cli_env):
    code = "import sys; from builder.train.rundir import claim; print(claim(sys.argv[1]), claim(sys.argv[1]))"
    runs = [subprocess.run([cli_env.python, "-c", code, str(tmp_path / "12-00-00")], capture_output=True,
                           text=True, env=cli_env.env, check=True).stdout.split() for _ in range(3)]
    assert [r[0] == r[1] for r in runs] == [True] * 3  # the same answer twice within a process
    assert [r[0] for r in runs] == [str(tmp_path / n) for n in ("12-00-00", "12-00-00-1", "12-00-00-2")]


def test_a_directory_with_another_runs_checkpoints_is_refused(toy_run, compose):
    from builder.train.run import train
    before = (toy_run.dir / "result.yaml").read_text()
    with pytest.raises(ConfigError, match=r"^run_dir: .* already holds a run's checkpoints \(best.ckpt, last.ckpt\); "
                                          r"resume=.* continues that run, or choose another run_dir$"):
        train(compose(["experiment=toy_classifier", f"run_dir={toy_run.dir}"]))
    assert (toy_run.dir / "result.yaml").read_text() == before
