"""A wheel install works from any directory, and a user's project composes its own configs with ours.

The wheel is built once and installed into a fresh virtual environment that sees this environment's
dependencies (torch, Lightning, ...) through a .pth file but not the repository: the shipped configs, the
blocks and every module must come from the wheel. Commands then run from a directory outside the repository.
"""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY_TOY = ["data.bayes_samples=0", "data.n_train=256", "data.n_val=64", "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]

USER_MODEL = """\
# a project's own model: the 4-3-2 network with 5 hidden units, its input named `features`
inputs:
  features: {shape: [batch, 4]}
nodes:
  norm: {block: input_norm, in: features, mean: [175.0, 180.0, 40.0, 40.0], std: [115.0, 80.0, 65.0, 25.0]}
  hidden: {block: linear, in: norm, in_features: 4, out_features: 5}
  act: {block: relu, in: hidden}
  logits: {block: classifier_head, in: act, in_features: 5, num_classes: 2}
outputs: [logits]
"""
USER_EXPERIMENT = """\
# @package _global_
defaults:
  - override /data: leaf_flower
  - override /model: five_hidden
  - override /task: classification
task:
  inputs: {features: features}   # the task's role -> this model's input name
"""


def build_wheel(out: Path) -> Path:
    """The project's wheel: built with this environment's setuptools, else in pip's isolated build environment."""
    for isolation in (["--no-build-isolation"], []):
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out),
                            *isolation], capture_output=True, text=True, timeout=300)
        wheels = list(out.glob("builder-*.whl"))
        if r.returncode == 0 and wheels:
            return wheels[0]
    pytest.skip(f"no build backend could be installed to build the wheel: {r.stderr.strip().splitlines()[-1:]}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bin directory of a fresh environment holding only the wheel, a working directory outside the repo)."""
    base = tmp_path_factory.mktemp("install")
    wheel = build_wheel(base / "wheel")
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                        str(wheel)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:  # a pip without --python: unpack the wheel into the environment
        import zipfile
        zipfile.ZipFile(wheel).extractall(site)
        for name, target in (("builder-train", "builder.cli.train"), ("builder-plan", "builder.cli.plan")):
            script = env_dir / "bin" / name
            script.write_text(f"#!{python}\nfrom {target} import main\nmain()\n")
            script.chmod(0o755)
    work = base / "project"
    (work / "conf" / "model").mkdir(parents=True)
    (work / "conf" / "experiment").mkdir()
    (work / "conf" / "model" / "five_hidden.yaml").write_text(USER_MODEL)
    (work / "conf" / "experiment" / "mine.yaml").write_text(USER_EXPERIMENT)
    return env_dir / "bin", work


def run(installed, *args):
    bin_dir, work = installed
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(work)}
    r = subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, cwd=work, env=env,
                       timeout=300)
    return r


def test_the_package_comes_from_the_wheel(installed):
    r = run(installed, "python", "-c", "import builder, blocks; print(builder.__file__); "
            "from builder.config import CONF_DIR; print(CONF_DIR)")
    module, conf = r.stdout.split()
    assert str(ROOT) not in module and str(ROOT) not in conf, r.stdout + r.stderr
    assert Path(conf, "train.yaml").is_file() and Path(conf).parent == Path(module).parent


def test_train_and_plan_from_another_directory(installed):
    r = run(installed, "builder-train", "experiment=toy_classifier", *TINY_TOY)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "val/acc = " in r.stdout
    assert (installed[1] / "outputs" / "latest" / "checkpoints" / "best.ckpt").is_file()
    r = run(installed, "builder-plan", "experiment=gpt2_small", "out=plans")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "124,439,808" in r.stdout


def test_a_users_config_directory_composes_with_ours(installed):
    r = run(installed, "builder-train", "--config-dir", "conf", "experiment=mine", *TINY_TOY, "run_dir=mine_run")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "hidden: {block: linear" not in r.stdout  # the resolved config lands in the run, not on the console
    assert "out_features: 5" in (installed[1] / "mine_run" / "config.yaml").read_text()
    r = run(installed, "builder-plan", "--config-dir", "conf", "experiment=mine", "out=plans")
    assert r.returncode == 0 and "37" in r.stdout, r.stderr[-2000:]
    r = run(installed, "builder-plan", "conf/model/five_hidden.yaml", "out=plans")
    assert r.returncode == 0 and "37" in r.stdout, r.stderr[-2000:]
    r = run(installed, "builder-train", "--config-dir", "conf", "experiment=mien")
    assert r.returncode == 2 and "experiment=mien: no such config (did you mean 'mine'?)" in r.stderr, r.stderr
