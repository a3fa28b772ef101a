"""A user's own task and data source, registered from their own module (imports: [...]) like blocks are:
they train without a line of builder/ changed, their checkpoint loads only with allow_imports, and a task
that the data cannot feed is refused before torch."""
from __future__ import annotations

import sys

import pytest

from builder.config import compose
from builder.errors import ConfigError

PLUGIN = '''
import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from builder import data_source, task
from builder.train.tasks.base import Task


@data_source("noisy_line", provides="pairs")
class NoisyLine(L.LightningDataModule):
    """y = 2x + 1 plus noise."""

    def __init__(self, cfg, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(cfg["n"], 1, generator=g) * 4 - 2
        self.x, self.y = x, 2 * x + 1 + 0.05 * torch.randn(cfg["n"], 1, generator=g)
        self.batch_size = cfg["batch_size"]

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=256)


@task("regression", inputs=("x",), outputs=("prediction",), needs="pairs")
class Regression(Task):
    monitor, mode = "val/loss", "min"

    def step(self, batch):
        x, y = batch
        return F.mse_loss(self.run_model("prediction", x=x), y), x.shape[0], {}
'''
MODEL = """
inputs: {value: {shape: [batch, 1]}}
nodes:
  line: {block: linear, in: value, in_features: 1, out_features: 1}
outputs: [line]
"""


@pytest.fixture(scope="module")
def user_project(tmp_path_factory):
    d = tmp_path_factory.mktemp("user_project")
    (d / "my_plugins.py").write_text(PLUGIN)
    for group, name, text in (("model", "line", MODEL),
                              ("task", "regression", "name: regression\ninputs: {x: value}\noutputs: {prediction: null}\n"
                                                     "sizes: {}\nmonitor: val/loss\nmode: min\n"),
                              ("data", "noisy_line", "name: noisy_line\nn: 512\nbatch_size: 32\n")):
        (d / "conf" / group).mkdir(parents=True, exist_ok=True)
        (d / "conf" / group / f"{name}.yaml").write_text(text)
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))


def overrides(run):
    return ["model=line", "task=regression", "data=noisy_line", "imports=[my_plugins]", "optim.lr=0.05",
            "optim.warmup_steps=0", "trainer.max_epochs=8", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", f"run_dir={run}"]


def test_a_user_task_and_data_source_train_and_load(user_project, tmp_path):
    import builder
    from builder.train.run import train
    loss = train(compose(overrides(tmp_path), dirs=[user_project / "conf"]))
    assert loss < 0.05  # the line is learnt: mean squared error near the noise's 0.0025
    with pytest.raises(ConfigError, match=r"needs the Python module\(s\) my_plugins .* allow_imports=true"):
        builder.load(tmp_path)
    model = builder.load(tmp_path, allow_imports=True)
    assert model.task == "regression" and type(model).__name__ == "LoadedModel"
    assert model(value=[[1.0]]).item() == pytest.approx(3.0, abs=0.2)


def test_a_task_the_data_cannot_feed_is_refused(user_project):
    from builder.train.check import check
    with pytest.raises(ConfigError) as e:
        check(compose([*overrides("x"), "data=leaf_flower"], dirs=[user_project / "conf"]))
    assert "data.name: the regression task needs data that provides pairs (noisy_line); 'leaf_flower' provides " \
           "features" in str(e.value)
    with pytest.raises(ConfigError) as e:
        check(compose(["task=regression", "imports=[my_pluginz]"], dirs=[user_project / "conf"]))
    assert "imports[0]: cannot import 'my_pluginz'" in str(e.value)
