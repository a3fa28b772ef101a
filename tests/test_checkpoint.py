"""Checkpoints hold plain data only, and loading never unpickles or imports anything it was not allowed to."""
from __future__ import annotations

import pytest
import torch

import builder
from builder.serve.checkpoint import CheckpointError, locate
from builder.errors import ConfigError

PLAIN = (dict, list, tuple, str, int, float, bool, type(None), torch.Tensor)


def plain(x) -> bool:
    if isinstance(x, dict):
        return all(isinstance(k, (str, int)) and plain(v) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return all(plain(v) for v in x)
    return isinstance(x, PLAIN)


@pytest.mark.parametrize("name", ["best.ckpt", "last.ckpt"])
def test_lightning_checkpoint_is_plain_data(toy_run, name):
    ckpt = torch.load(toy_run.dir / "checkpoints" / name, map_location="cpu", weights_only=True)
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "callbacks", "loops", "builder"):
        assert key in ckpt, key
    assert plain(ckpt)
    meta = ckpt["builder"]
    assert meta["task"] == "classification" and meta["imports"] == []
    assert meta["config"]["data"]["classes"] == ["leaf", "flower"]


class Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))  # what an attacker would make run on load


def test_pickled_object_is_rejected(toy_run, tmp_path, capsys):
    ckpt = torch.load(toy_run.dir / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["extra"] = Payload()
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError) as e:
        builder.load(bad)
    assert "pickled Python objects" in str(e.value) and "(it contains print)" in str(e.value)
    assert "unpickled!" not in capsys.readouterr().out


def test_foreign_checkpoint_is_rejected(tmp_path):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "epoch": 3}, other)
    with pytest.raises(CheckpointError, match=r"is a PyTorch file from another program, not a checkpoint written by "
                                              r"builder-train \(no 'builder' entry; it holds state_dict, epoch\)"):
        builder.load(other)


@pytest.mark.parametrize("content, message", [
    (b"", r"is empty, not a checkpoint"),
    (b"model weights: see the wiki\n", r"is not a checkpoint: it is a text file beginning 'model weights: see the "),
    (bytes(range(250, 256)) * 20, r"is not a checkpoint: it is binary data beginning with bytes fa fb fc fd fe ff fa fb"),
], ids=["empty", "text", "random bytes"])
def test_files_that_are_not_checkpoints_are_named_so(tmp_path, content, message):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"^ckpt: .*model.ckpt {message}"):
        builder.load(bad)


def test_a_truncated_checkpoint_is_damaged_not_unsafe(toy_run, tmp_path):
    whole = (toy_run.dir / "checkpoints" / "last.ckpt").read_bytes()
    for cut in (len(whole) // 2, 100):
        bad = tmp_path / "cut.ckpt"
        bad.write_bytes(whole[:cut])
        with pytest.raises(CheckpointError, match=r"cut.ckpt is a damaged checkpoint, cut off or corrupted \(") as e:
            builder.load(bad)
        assert "pickled" not in str(e.value)


def test_user_imports_need_permission(toy_run, tmp_path):
    ckpt = torch.load(toy_run.dir / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["builder"]["config"]["model"]["imports"] = ["json"]  # harmless stand-in for a user block module
    ckpt["builder"]["imports"] = ["json"]
    needs = tmp_path / "needs_imports.ckpt"
    torch.save(ckpt, needs)
    with pytest.raises(ConfigError) as e:
        builder.load(needs)
    assert "json" in str(e.value) and "allow_imports=true" in str(e.value)
    assert builder.load(needs, allow_imports=True).predict([32, 107, 56, 11.2]).labels == ["leaf"]


def test_locate(toy_run, tmp_path):
    best = toy_run.dir / "checkpoints" / "best.ckpt"
    assert locate(toy_run.dir) == best
    assert locate(toy_run.dir / "checkpoints" / "last.ckpt").name == "last.ckpt"
    export = builder.load(best).export(tmp_path / "exp")
    assert locate(export) == export
    with pytest.raises(CheckpointError, match="does not exist"):
        locate(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoints"):
        locate(tmp_path / "empty")
