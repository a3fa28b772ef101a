"""The speed layer (builder/graph/fast.py): the oneDNN linear path gives the same numbers and gradients as
F.linear, aten serves where it does not apply, its weight copy follows in-place updates, an unknown backend is
a clear error; a built model's blocks keep their classes' names and state dicts, and BUILDER_KERNELS=off
leaves the model as built."""
import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from builder.graph import cpu_linear, fast
from builder.graph.cpu_linear import applies

needs_onednn = pytest.mark.skipif(not cpu_linear.WORKS, reason="this torch build has no working oneDNN linear")


@pytest.fixture(autouse=True)
def onednn_on(monkeypatch):
    """The oneDNN path on wherever it works, whichever backend this processor gets by default."""
    monkeypatch.setattr(cpu_linear, "ENABLED", cpu_linear.WORKS)


def Linear(*args, **kwargs):
    """An nn.Linear with the speed layer applied, as build_model leaves every linear layer of a model."""
    return fast.apply(torch.nn.Linear(*args, **kwargs))


def calls_onednn(monkeypatch) -> list:
    seen = []
    real = cpu_linear._op
    monkeypatch.setattr(cpu_linear, "_op", lambda x, w, b: seen.append(w.stride()) or real(x, w, b))
    return seen


@needs_onednn
@pytest.mark.parametrize("rows", [1, 5, 300])
def test_forward_and_gradients_match_f_linear(monkeypatch, rows):
    torch.manual_seed(0)
    layer = Linear(384, 1152)
    x = torch.randn(rows, 384, requires_grad=True)
    seen = calls_onednn(monkeypatch)
    y = layer(x)
    assert seen, "the oneDNN path was not taken"
    ref_x = x.detach().clone().requires_grad_()
    ref = F.linear(ref_x, layer.weight, layer.bias)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(y)
    gx, gw, gb = torch.autograd.grad(y, (x, layer.weight, layer.bias), grad)
    rx, rw, rb = torch.autograd.grad(ref, (ref_x, layer.weight, layer.bias), grad)
    for mine, theirs in ((gx, rx), (gw, rw), (gb, rb)):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


@needs_onednn
def test_inference_reads_a_column_copy_that_follows_in_place_updates(monkeypatch):
    torch.manual_seed(0)
    layer = Linear(512, 512)
    x = torch.randn(1, 1, 512)
    seen = calls_onednn(monkeypatch)
    with torch.inference_mode():
        before = layer(x)
    assert seen == [(1, 512)]  # (out, in) view of (in, out) storage
    with torch.no_grad():
        layer.weight.mul_(2.0)  # an optimizer step or load_state_dict changes the weight in place
        after = layer(x)
    torch.testing.assert_close(after, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(after, before)
    layer.load_state_dict({"weight": torch.zeros(512, 512), "bias": torch.ones(512)})
    with torch.no_grad():
        assert torch.equal(layer(x), torch.ones(1, 1, 512))
    assert "_columns" not in copy.deepcopy(layer).__dict__  # copies and pickles leave it behind
    layer.double()
    assert "_columns" not in layer.__dict__
    with torch.no_grad():
        assert torch.equal(layer(x.double()), torch.ones(1, 1, 512, dtype=torch.float64))


@needs_onednn
def test_a_model_above_the_copy_limit_decodes_from_its_weights(monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(1, 512)
    monkeypatch.setenv("BUILDER_DECODE_COPY_MB", "0.5")  # 1 MB of weights: above the limit
    model = fast.apply(torch.nn.Sequential(torch.nn.Linear(512, 256), torch.nn.Linear(256, 512)))
    seen = calls_onednn(monkeypatch)
    with torch.inference_mode():
        y = model(x)
    assert seen == [(512, 1), (256, 1)]  # the weights as stored: no column copy
    assert not any("_columns" in m.__dict__ for m in model)
    torch.testing.assert_close(y, F.linear(F.linear(x, model[0].weight, model[0].bias), model[1].weight,
                                           model[1].bias), rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("BUILDER_DECODE_COPY_MB", "1")  # at the limit: copies
    model = fast.apply(torch.nn.Sequential(torch.nn.Linear(512, 256), torch.nn.Linear(256, 512)))
    with torch.inference_mode():
        model(x)
    assert all("_columns" in m.__dict__ for m in model)


def test_aten_serves_what_onednn_does_not():
    big = torch.randn(1024, 512)
    x = torch.randn(4, 512)
    assert applies(x, big) == cpu_linear.ENABLED
    assert not applies(torch.randn(4, 16), torch.randn(8, 16))  # too little work to repay the call
    assert not applies(x.double(), big.double())
    assert not applies(x.to("meta"), big.to("meta"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not applies(x, big)
        y = Linear(512, 1024)(x)
    assert y.dtype == torch.bfloat16  # autocast still applies


def test_compiled_module_matches_eager():
    torch.manual_seed(0)
    layer = Linear(512, 384)
    x = torch.randn(3, 512)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)  # dynamo traces the aten path
    torch.testing.assert_close(compiled(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        layer(x[:1])  # an eager decoding step leaves a column copy behind; the compiled module must not read it
        torch._dynamo.reset()
        compiled = torch.compile(layer, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x[:1]), F.linear(x[:1], layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_unknown_backend_is_refused_by_name():
    env = dict(os.environ, BUILDER_LINEAR="onednnn")
    run = subprocess.run([sys.executable, "-c", "import builder.graph.cpu_linear"], env=env, capture_output=True, text=True)
    assert run.returncode != 0
    assert "BUILDER_LINEAR='onednnn' is not a linear backend; choose one of auto, onednn, aten" in run.stderr


@pytest.mark.parametrize("backend", ["aten", "onednn", "auto"])
def test_the_backend_is_chosen_by_the_environment_or_the_processor(backend):
    env = dict(os.environ, BUILDER_LINEAR=backend)
    code = "import builder.graph.cpu_linear as c; print(c.ENABLED, c.WORKS)"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    enabled, works = run.stdout.split()
    avx512 = "AVX512" in torch.backends.cpu.get_cpu_capability()
    assert enabled == {"aten": "False", "onednn": works, "auto": str(works == "True" and avx512)}[backend]


def test_a_built_model_is_plain_pytorch_with_the_speed_layer_on_top(monkeypatch):
    from builder.config import compose, resolve
    from builder.graph.build import build_model
    cfg = resolve(compose(["model=gpt", "model.vocab_size=11", "model.block_size=8", "model.n_layer=1",
                           "model.n_head=2", "model.d_model=16"]).model, "model")
    torch.manual_seed(0)
    fast_model = build_model(cfg)
    monkeypatch.setenv("BUILDER_KERNELS", "off")
    torch.manual_seed(0)
    plain = build_model(cfg)
    qkv = plain.graph["layers"][0]["attn"].qkv
    assert type(qkv) is torch.nn.Linear and type(plain.graph["layers"][0]["ln1"]).__mro__[1] is torch.nn.LayerNorm
    fast_qkv = fast_model.graph["layers"][0]["attn"].qkv
    assert isinstance(fast_qkv, cpu_linear.OneDNNLinear) and type(fast_qkv).__name__ == "Linear"
    assert fast_model.state_dict().keys() == plain.state_dict().keys()
    x = torch.randint(0, 11, (2, 8))
    torch.testing.assert_close(fast_model(x), plain(x), rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("BUILDER_KERNELS", "fast")
    with pytest.raises(ValueError, match="BUILDER_KERNELS='fast': expected on or off"):
        build_model(cfg)


def large(monkeypatch, *layers: torch.nn.Module) -> torch.nn.Module:
    """A model of `layers` that decodes with split products: aten's path, two threads, the size limit lifted."""
    monkeypatch.setattr(cpu_linear, "ENABLED", False)
    monkeypatch.setattr(fast, "SPLIT_MIN_MODEL_MB", 0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    return fast.apply(torch.nn.Sequential(*layers))


@pytest.mark.parametrize("rows", [1, 3, 64])
def test_a_split_product_gives_f_linear_numbers(monkeypatch, rows):
    torch.manual_seed(0)
    monkeypatch.setattr(cpu_linear, "PACKS", False)  # several rows read a packed copy where oneDNN works
    model = large(monkeypatch, torch.nn.Linear(384, 1152), torch.nn.Linear(1152, 257, bias=False))
    x = torch.randn(2, rows // 2 or 1, 384) if rows > 1 else torch.randn(1, 1, 384)
    seen = []
    real = cpu_linear.split_product
    monkeypatch.setattr(cpu_linear, "split_product", lambda *a: seen.append(a[2].shape) or real(*a))
    with torch.inference_mode():
        y = model(x)
    assert seen == [(2, 384, 576), (2, 1152, 128)]  # 257 outputs: two parts of 128, the last one by F.linear
    ref = F.linear(F.linear(x, model[0].weight, model[0].bias), model[1].weight)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_split_views_follow_the_weight_and_stay_out_of_copies(monkeypatch):
    torch.manual_seed(0)
    model = large(monkeypatch, torch.nn.Linear(512, 512))
    layer, x = model[0], torch.randn(1, 1, 512)
    with torch.inference_mode():
        before = layer(x)
    assert layer.__dict__["_split"][1] is not None
    with torch.no_grad():
        layer.weight.mul_(2.0)  # an optimizer step changes the weight in place: the views see it
        torch.testing.assert_close(layer(x), 2 * before - layer.bias, rtol=1e-5, atol=1e-5)
    assert "_split" not in copy.deepcopy(layer).__dict__
    layer.double()
    assert "_split" not in layer.__dict__
    with torch.no_grad():
        torch.testing.assert_close(layer(x.double()), F.linear(x.double(), layer.weight, layer.bias))


@pytest.mark.skipif(not cpu_linear.PACKS, reason="this torch build cannot pack weights for oneDNN")
def test_several_rows_read_a_packed_copy_that_follows_the_weight(monkeypatch):
    torch.manual_seed(0)
    model = large(monkeypatch, torch.nn.Linear(384, 1152), torch.nn.Linear(1152, 257, bias=False))
    split = []
    real = cpu_linear.split_product
    monkeypatch.setattr(cpu_linear, "split_product", lambda *a: split.append(a[2].shape) or real(*a))
    for rows in (2, 3, 64):
        x = torch.randn(rows, 1, 384)
        with torch.inference_mode():
            y = model(x)
        torch.testing.assert_close(y, F.linear(F.linear(x, model[0].weight, model[0].bias), model[1].weight),
                                   rtol=1e-5, atol=1e-5)
    assert split == [] and all("_packed" in layer.__dict__ for layer in model)
    layer, x = model[0], torch.randn(4, 384)
    with torch.no_grad():
        before = layer(x)
        layer.weight.mul_(2.0)  # an optimizer step changes the weight in place: a new copy
        torch.testing.assert_close(layer(x), 2 * before - layer.bias, rtol=1e-5, atol=1e-5)
        layer(x[:1])  # one row: the split product, no copy
    assert len(split) == 1
    assert "_packed" not in copy.deepcopy(layer).__dict__
    layer.double()
    assert "_packed" not in layer.__dict__
    monkeypatch.setenv("BUILDER_DECODE_COPY_MB", "0")  # above the copy limit: no packed copy
    limited = large(monkeypatch, torch.nn.Linear(384, 1152))
    with torch.inference_mode():
        limited(torch.randn(3, 384))
    assert "_packed" not in limited[0].__dict__ and len(split) == 2


def test_small_models_and_training_leave_the_product_whole(monkeypatch):
    monkeypatch.setattr(cpu_linear, "ENABLED", False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    small = fast.apply(torch.nn.Sequential(torch.nn.Linear(512, 512)))  # 1 MB of weights: cached, one thread
    with torch.inference_mode():
        small(torch.randn(1, 512))
    assert "_split" not in small[0].__dict__
    model = large(monkeypatch, torch.nn.Linear(512, 512))
    model(torch.randn(1, 512)).sum().backward()  # with gradients: aten's linear
    assert "_split" not in model[0].__dict__ and model[0].weight.grad is not None
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert cpu_linear.split_parts(model[0].weight) is None  # one thread: nothing to split


def test_decoding_rms_norm_equals_torch(monkeypatch):
    torch.manual_seed(0)
    norm = fast.apply(torch.nn.RMSNorm(384, eps=1e-5))
    with torch.no_grad():
        norm.weight.normal_()
    seen = []
    real = torch.layer_norm
    monkeypatch.setattr(torch, "layer_norm", lambda *a: seen.append(a[0].shape) or real(*a))
    for scale in (1e-3, 1.0, 1e3):
        for rows in (1, 8, 64):
            x = torch.randn(rows, 1, 384) * scale
            with torch.inference_mode():
                y = norm(x)  # a decoding step: the layer-norm form
            torch.testing.assert_close(y, torch.rms_norm(x, (384,), norm.weight, 1e-5), rtol=1e-5, atol=1e-6)
    assert len(seen) == 9
    x = torch.randn(4, 384, requires_grad=True)
    norm(x).sum().backward()  # gradients, or more rows than a decoding step: torch.rms_norm itself
    with torch.no_grad():
        norm(torch.randn(65, 384))
    assert x.grad is not None and len(seen) == 9
