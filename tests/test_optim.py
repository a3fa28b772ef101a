"""Optimisation from config: decay groups, the warmup-cosine schedule, optimisers and losses."""
from __future__ import annotations

import io

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from builder.train.optim import WarmupCosine, build_optimizer, param_groups
from builder.train.tasks.classification import classification_loss


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.pos = nn.Embedding(4, 8)
        self.fc = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.emb.weight  # tied: one parameter, owned by an embedding and a linear layer
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)


def test_decay_groups():
    decay, no_decay = param_groups(TinyLM(), weight_decay=0.1)
    assert decay["names"] == ["fc.weight"] and decay["weight_decay"] == 0.1
    assert sorted(no_decay["names"]) == ["emb.weight", "fc.bias", "norm.bias", "norm.weight", "pos.weight"]
    assert no_decay["weight_decay"] == 0.0
    # every trainable parameter exactly once; the tied weight is not listed twice
    ids = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(ids) == len(set(ids)) == 6


def test_decay_groups_of_the_toy_mlp(compose):
    from builder.graph.build import build_model
    decay, no_decay = param_groups(build_model(compose([]).model), weight_decay=0.01)
    assert decay["names"] == ["graph.h.weight", "graph.logits.weight"]
    assert no_decay["names"] == ["graph.h.bias", "graph.logits.bias"]  # input_norm's mean/std are buffers


def test_warmup_cosine():
    f = WarmupCosine(warmup_steps=10, decay_steps=110, min_ratio=0.1)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)
    assert f(5000) == pytest.approx(0.1)  # the floor
    after = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(after, after[1:]))


@pytest.mark.parametrize("name,cls", [("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)])
def test_optimizer_from_config(compose, name, cls):
    optim_cfg = OmegaConf.to_container(compose([f"optim={name}", "optim.weight_decay=0.05"]).optim, resolve=True)
    model = TinyLM()
    opt, sched = build_optimizer(model, optim_cfg, total_steps=100)
    assert type(opt) is cls
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    warm = 1 / optim_cfg["warmup_steps"]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([optim_cfg["lr"] * warm] * 2)
    for _ in range(100):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(optim_cfg["min_lr"])
    # optimizer and scheduler state must be plain data: checkpoints load with weights_only=True
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    torch.load(buf, weights_only=True)


def test_adamw_runs_fused_unless_the_config_chooses(compose):
    optim_cfg = OmegaConf.to_container(compose(["optim=adamw"]).optim, resolve=True)
    models = [TinyLM(), TinyLM()]
    models[1].load_state_dict(models[0].state_dict())
    fused, _ = build_optimizer(models[0], optim_cfg, total_steps=100)
    looped, _ = build_optimizer(models[1], {**optim_cfg, "optimizer": {**optim_cfg["optimizer"], "foreach": False}}, 100)
    assert [g["fused"] for g in fused.param_groups] == [True, True]
    assert [g["fused"] for g in looped.param_groups] == [None, None]  # the config chose: left alone
    trained = [[p for p in m.parameters() if p.requires_grad] for m in models]
    start = [p.detach().clone() for p in trained[0]]
    torch.manual_seed(0)
    for _ in range(20):  # the same steps within float rounding
        grads = [torch.randn_like(p) for p in trained[0]]
        for params, opt in zip(trained, (fused, looped)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for a, b, before in zip(*trained, start):
        assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, before, atol=1e-3)


def test_losses():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    target = torch.tensor([0, 1])
    probs = logits.softmax(-1)
    onehot = torch.eye(2)
    assert classification_loss("cross_entropy", logits, target) == pytest.approx(
        torch.nn.functional.cross_entropy(logits, target).item())
    assert classification_loss("mse", logits, target) == pytest.approx(((probs - onehot) ** 2).mean().item())
    assert classification_loss("l1", logits, target) == pytest.approx((probs - onehot).abs().mean().item())


def test_unknown_loss_is_a_config_error(compose):
    from builder.errors import ConfigError
    from builder.train.check import check
    with pytest.raises(ConfigError) as e:
        check(compose(["task.name=classifer"]))
    assert "task.name: unknown task 'classifer' (did you mean 'classification'?)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        check(compose(["experiment=toy_classifier", "task.loss=mae"]))
    assert "task.loss: unknown loss 'mae' (did you mean 'mse'?); available: cross_entropy, mse, l1" in str(e.value)
    with pytest.raises(ConfigError) as e:  # a key that would do nothing is refused
        check(compose(["experiment=gpt_char", "+task.loss=mse"]))
    assert "task.loss: the language_model task has one loss (cross-entropy); remove task.loss" in str(e.value)


def test_inverse_sqrt_schedule_is_the_papers():
    from builder.train.optim import InverseSqrt
    s = InverseSqrt(4000)
    assert s(0) == 1 / 4000 and s(3999) == 1.0
    assert s(15999) == pytest.approx(0.5)  # sqrt(4000 / 16000)
