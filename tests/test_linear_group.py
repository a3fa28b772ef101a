"""Layers that read one input run as one product while decoding (builder/graph/linear_group.py): the same
logits and tokens as the layers one by one, for Llama and Qwen2-style biases on both linear paths; the copy
follows in-place weight changes; hooks, adapters, gradients, large models and small ones keep the layers apart."""
import copy

import pytest
import torch
import torch.nn.functional as F

from builder.config import compose, resolve
from builder.graph import cpu_linear, fast
from builder.graph.build import build_model
from builder.graph.decoding import DecodeState
from builder.serve.generation import decode, lm_step


def llama(monkeypatch, *overrides: str, onednn: bool = False):
    """A tiny Llama whose decoding groups its layers: the size limits lifted, two threads."""
    monkeypatch.setattr(cpu_linear, "ENABLED", onednn and cpu_linear.WORKS)
    monkeypatch.setattr(fast, "SPLIT_MIN_MODEL_MB", 0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    torch.manual_seed(0)
    cfg = compose(["model=llama", "model.vocab_size=37", "model.block_size=32", "model.n_layer=2", "model.n_head=4",
                   "model.kv_heads=2", "model.d_model=64", "model.d_ff=96", *overrides])
    model = build_model(resolve(cfg.model, "model")).eval()
    with torch.no_grad():  # larger weights than an initialisation's: clear argmaxes
        for p in model.parameters():
            p.mul_(4)
    return model


def groups(model):
    return [m for m in model.modules() if isinstance(m, fast.LinearGroup)]


def separately(model):
    for m in groups(model):
        m.__dict__["_group_allowed"] = False
        m.__dict__.pop("_group", None)


@pytest.mark.parametrize("overrides,onednn,packs", [
    ((), False, True), ((), False, False), (("model.attn_bias=[q,k,v]", "model.qk_norm=true"), False, True),
    ((), True, True)], ids=["llama-aten-packed", "llama-aten-split", "qwen2-biases-qknorm", "llama-onednn"])
def test_grouped_decoding_equals_the_layers_one_by_one(monkeypatch, overrides, onednn, packs):
    if onednn and not cpu_linear.WORKS:
        pytest.skip("this torch build has no working oneDNN linear")
    monkeypatch.setattr(cpu_linear, "PACKS", packs and cpu_linear.PACKS)  # three rows: packed where it works
    model = llama(monkeypatch, *overrides, onednn=onednn)
    assert len(groups(model)) == 4  # q/k/v and gate/up in each of 2 layers
    prompt = torch.randint(0, 37, (3, 5), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        grouped_logits = model(prompt, state=DecodeState())
        grouped = decode(lm_step(model), prompt, max_new_tokens=20)
    assert all("_group" in m.__dict__ for m in groups(model))
    separately(model)
    with torch.inference_mode():
        logits = model(prompt, state=DecodeState())
        tokens = decode(lm_step(model), prompt, max_new_tokens=20)
    assert not any("_group" in m.__dict__ for m in groups(model))
    torch.testing.assert_close(grouped_logits, logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(grouped, tokens)


def test_the_copy_follows_the_weights_and_stays_out_of_copies(monkeypatch):
    model = llama(monkeypatch)
    attn = groups(model)[0]
    x = torch.randn(2, 1, 64)
    with torch.inference_mode():
        attn.project(x)
    with torch.no_grad():
        attn.k.weight.mul_(-2.0)  # an optimiser step or load_state_dict changes a weight in place
        q, k, v = attn.project(x)
    torch.testing.assert_close(k, F.linear(x, attn.k.weight), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q, F.linear(x, attn.q.weight), rtol=1e-5, atol=1e-5)
    model.load_state_dict({k: torch.zeros_like(v) for k, v in model.state_dict().items()}, assign=True)
    with torch.no_grad():
        assert not attn.project(x)[2].any()  # new tensors: a new copy
    assert "_group" not in copy.deepcopy(attn).__dict__
    attn.double()
    assert "_group" not in attn.__dict__
    with torch.no_grad():
        assert attn.project(x.double())[0].dtype == torch.float64  # not float32: the layers one by one
    assert "_group" not in attn.__dict__


def test_hooks_adapters_and_gradients_keep_the_layers_apart(monkeypatch):
    from builder.graph import adapters
    model = llama(monkeypatch)
    attn, mlp = groups(model)[:2]
    x = torch.randn(1, 1, 64)
    seen = []
    handle = attn.v.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.inference_mode():
        attn.project(x)
    assert seen == [(1, 1, 32)] and "_group" not in attn.__dict__  # the hook sees the layer's own call
    handle.remove()
    q, k, v = attn.project(x)  # training: the layers themselves, gradients to each weight
    (q.sum() + k.sum() + v.sum()).backward()
    assert all(p.grad is not None for p in (attn.q.weight, attn.k.weight, attn.v.weight))
    assert "_group" not in attn.__dict__
    adapters.apply(model, {"name": "lora", "targets": ["layers.*.mlp"], "rank": 2, "alpha": 4, "dropout": 0.0})
    with torch.no_grad():
        mlp.up.lora_b.normal_()  # a trained adapter: the update is not zero
        gate, up = mlp.project(x)
    torch.testing.assert_close(up, mlp.up(x), rtol=0, atol=0)
    assert not torch.allclose(up, F.linear(x, mlp.up.weight), atol=1e-3)  # the update is in


def test_large_and_small_models_decode_their_layers_one_by_one(monkeypatch):
    monkeypatch.setenv("BUILDER_DECODE_COPY_MB", "0.01")  # the weights are above the copy limit
    model = llama(monkeypatch)
    monkeypatch.delenv("BUILDER_DECODE_COPY_MB")
    with torch.inference_mode():
        decode(lm_step(model), torch.tensor([[1, 2, 3]]), max_new_tokens=3)
    assert not any("_group" in m.__dict__ for m in groups(model))
    monkeypatch.setattr(fast, "SPLIT_MIN_MODEL_MB", 8)  # on aten's path a small model's products are not split
    fast.limit_columns(model)
    with torch.inference_mode():
        decode(lm_step(model), torch.tensor([[1, 2, 3]]), max_new_tokens=3)
    assert not any("_group" in m.__dict__ for m in groups(model))


class TwoHeads(torch.nn.Module):
    """A user's block: two linear layers on one input, named in `same_input`, computed by `project`."""

    same_input = ("a", "b")

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(64, 48), torch.nn.Linear(64, 16, bias=False)

    def project(self, x):
        return self.a(x), self.b(x)

    def forward(self, x):
        a, b = self.project(x)
        return torch.cat([a.relu(), b], dim=-1)


def test_any_block_naming_its_layers_gets_them_grouped(monkeypatch):
    monkeypatch.setattr(cpu_linear, "ENABLED", False)
    monkeypatch.setattr(fast, "SPLIT_MIN_MODEL_MB", 0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    torch.manual_seed(0)
    block = fast.apply(TwoHeads())
    x = torch.randn(3, 64)
    with torch.inference_mode():
        y = block(x)
    assert isinstance(block, fast.LinearGroup) and "_group" in block.__dict__
    assert type(block).__name__ == "TwoHeads"
    expected = torch.cat([F.linear(x, block.a.weight, block.a.bias).relu(), F.linear(x, block.b.weight)], dim=-1)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
