"""The toy leaf/flower classifier end to end: train from the real configs, reload, predict, evaluate, export."""
from __future__ import annotations

import subprocess

import pytest
import torch
from omegaconf import OmegaConf

import builder
from builder.train.metrics_csv import read_metrics

EXAMPLES = [[32, 107, 56, 11.2], [241, 200, 4, 59.5], [255, 235, 59, 45.3]]  # leaf, flower, sunflower


def test_run_directory(toy_run):
    d = toy_run.dir
    assert toy_run.score >= 0.98
    for name in ("config.yaml", "overrides.yaml", "metrics.csv", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (d / name).is_file(), name
    cfg = OmegaConf.load(d / "config.yaml")
    assert "${" not in (d / "config.yaml").read_text()  # resolved
    assert cfg.task.monitor == "val/acc" and cfg.data.classes == ["leaf", "flower"]
    assert "trainer.max_epochs=6" in OmegaConf.load(d / "overrides.yaml")
    header = (d / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:1] == ["step"] and {"train/loss", "val/loss", "val/acc"} <= set(header)
    rows = read_metrics(d / "metrics.csv")
    val = [r for r in rows if "val/acc" in r]
    assert len(val) == 6 and max(r["val/acc"] for r in val) == pytest.approx(toy_run.score)
    assert any("train/loss" in r for r in rows)


def test_reload_last_and_predict(toy_run):
    model = builder.load(toy_run.dir / "checkpoints" / "last.ckpt")
    labels, probs = model.predict(EXAMPLES)
    assert labels == ["leaf", "flower", "flower"]
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(-1), torch.ones(3))
    assert model.predict(EXAMPLES[0]).labels == ["leaf"]  # a single row works too


def test_export_and_reload_identical(toy_run, tmp_path):
    model = builder.load(toy_run.dir)  # a run directory means its best checkpoint
    assert model.path.name == "best.ckpt"
    out = model.export(tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.safetensors"]
    again = builder.load(out)
    x = torch.tensor(EXAMPLES) + torch.randn(3, 4)
    assert torch.equal(model(x), again(x))
    assert torch.equal(model.predict(EXAMPLES).probs, again.predict(EXAMPLES).probs)


def test_eval_with_data_overrides(toy_run, capsys):
    from builder.cli.eval import run
    metrics = run([f"ckpt={toy_run.dir}", "data.seed=3", "data.n_val=500"])
    assert set(metrics) == {"val/acc", "val/loss"} and metrics["val/acc"] >= 0.97
    assert "data.seed=3" in capsys.readouterr().out


def test_eval_unknown_key_suggests(toy_run, capsys):
    from builder.cli.eval import main
    with pytest.raises(SystemExit) as e:
        main([f"ckpt={toy_run.dir}", "data.sed=3"])
    assert e.value.code == 2
    assert "data.sed: no such key (did you mean 'seed'?)" in capsys.readouterr().err


def test_same_seed_same_weights(train_tiny):
    # accumulation, clipping and SGD on: repeatability must survive all of them
    overrides = ["data.n_train=256", "data.n_val=64", "trainer.max_steps=10", "trainer.accumulate_grad_batches=2",
                 "trainer.gradient_clip_val=0.5", "optim=sgd", "seed=7", "trainer.log_every_n_steps=2"]
    (a, _), (b, _) = train_tiny(overrides), train_tiny(overrides)
    ca, cb = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (a, b))
    assert ca["global_step"] == 10 and ca["lr_schedulers"][0]["last_epoch"] == 10  # stepped per optimizer step
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for k in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][k], cb["state_dict"][k]), k
    assert isinstance(ca["optimizer_states"][0], dict) and "momentum_buffer" in str(ca["optimizer_states"][0])


def test_cli_predict(toy_run, cli_env):
    r = subprocess.run([cli_env.python, "-m", "builder.cli.predict", f"ckpt={toy_run.dir}", "input=[32,107,56,11.2]"],
                       capture_output=True, text=True, env=cli_env.env, cwd=cli_env.cwd, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("leaf  (leaf 0.") and "flower 0." in r.stdout


def test_cli_train_typo_fails_before_torch(cli_env, tmp_path):
    # train's own config check runs before torch/Lightning are imported: the process never loads them
    argv = ["builder-train", "task.name=clasification", f"hydra.run.dir={tmp_path}", "hydra/job_logging=disabled"]
    code = (f"import sys; import builder.cli.train as t; sys.argv = {argv!r}\n"
            "try: t.main()\nexcept SystemExit as e: print('exit', e.code, 'torch' in sys.modules)")
    r = subprocess.run([cli_env.python, "-c", code], capture_output=True, text=True, env=cli_env.env,
                       cwd=cli_env.cwd, timeout=60)
    assert "exit 2 False" in r.stdout, r.stdout + r.stderr
    assert "task.name: unknown task 'clasification' (did you mean 'classification'?)" in r.stderr
