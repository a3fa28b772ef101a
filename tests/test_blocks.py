"""Built-in blocks: numerics against torch references, KV caching, and ast-read schemas vs. imported ones."""
import importlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blocks.activations import ACTIVATIONS, gelu, leaky_relu, relu, sigmoid, step, tanh
from blocks.attention import CrossAttention, SelfAttention
from blocks.embedding import PositionEmbedding, TokenEmbedding
from blocks.feed_forward import FeedForward, GatedFeedForward
from blocks.grouped_attention import GroupedQueryAttention
from blocks.heads import ClassifierHead, LMHead
from blocks.input_norm import InputNorm
from blocks.kv_cache import KVCache
from blocks.norm import RMSNorm
from blocks.residual import AddNorm, add
from blocks.rope import Rotary, inverse_frequencies
from blocks.sinusoidal import SinusoidalPosition
from blocks.softmax import softmax
from builder.graph import registry

torch.manual_seed(0)
ATOL = 1e-5


class FakeState:
    """The decoding-state interface the blocks rely on: an offset, a per-module dict, and the left padding of
    a batch of prompts (none here: builder/graph/decoding.py has it)."""

    def __init__(self):
        self.offset = 0
        self.slots = {}

    def slot(self, module):
        return self.slots.setdefault(id(module), {})

    def key_padding(self, T, S):
        return None

    def once(self, kind, T, make):
        return make()

    def rows(self, T):
        return None


def mha_like(attn: SelfAttention, dim: int, heads: int) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(dim, heads, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
    return mha


# ---------------------------------------------------------------- attention

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_self_attention_matches_multihead_attention(causal, padded):
    B, T, C, H = 2, 5, 8, 2
    attn = SelfAttention(C, H, causal=causal).eval()
    mha = mha_like(attn, C, H)
    x = torch.randn(B, T, C)
    pad = torch.tensor([[False] * T, [False, False, False, True, True]]) if padded else None
    causal_mask = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None  # MHA: True = blocked
    with torch.no_grad():
        ours = attn(x, pad)
        ref, _ = mha(x, x, x, key_padding_mask=pad, attn_mask=causal_mask, need_weights=False)
    assert torch.allclose(ours, ref, atol=ATOL)


@pytest.mark.parametrize("kv_dim", [None, 6])
def test_cross_attention_matches_multihead_attention(kv_dim):
    B, T, S, C, H = 2, 3, 4, 8, 2
    attn = CrossAttention(C, H, kv_dim=kv_dim).eval()
    mha = nn.MultiheadAttention(C, H, kdim=kv_dim, vdim=kv_dim, batch_first=True).eval()
    with torch.no_grad():
        wk, wv = attn.kv_proj.weight.split(C)
        if kv_dim is None:
            mha.in_proj_weight.copy_(torch.cat([attn.q.weight, wk, wv]))
        else:
            mha.q_proj_weight.copy_(attn.q.weight)
            mha.k_proj_weight.copy_(wk)
            mha.v_proj_weight.copy_(wv)
        mha.in_proj_bias.copy_(torch.cat([attn.q.bias, attn.kv_proj.bias]))
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
    x, kv = torch.randn(B, T, C), torch.randn(B, S, kv_dim or C)
    pad = torch.tensor([[False] * S, [False, False, True, True]])
    with torch.no_grad():
        ours = attn(x, kv, pad)
        ref, _ = mha(x, kv, kv, key_padding_mask=pad, need_weights=False)
    assert torch.allclose(ours, ref, atol=ATOL)


def test_attention_rejects_heads_not_dividing_dim():
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention(10, 3)
    with pytest.raises(ValueError, match="divisible"):
        CrossAttention(10, 4)


def test_output_projections_are_marked_residual():
    assert SelfAttention(8, 2).proj.residual_projection is True
    assert CrossAttention(8, 2).proj.residual_projection is True
    assert not hasattr(SelfAttention(8, 2).qkv, "residual_projection")


def test_capture_weights_are_causal_softmax_and_leave_output_unchanged():
    B, T, C, H = 2, 4, 8, 2
    attn = SelfAttention(C, H, causal=True).eval()
    x = torch.randn(B, T, C)
    with torch.no_grad():
        fused = attn(x)
        attn.capture = True
        captured = attn(x)
    w = attn.weights
    assert w.shape == (B, H, T, T) and not w.requires_grad
    assert torch.allclose(w.sum(-1), torch.ones(B, H, T), atol=ATOL)
    assert (w.triu(1) == 0).all()
    q, k, _ = attn.qkv(x).split(C, dim=2)
    q, k = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k))
    scores = (q @ k.transpose(-2, -1) / math.sqrt(C // H)).masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
    assert torch.allclose(w, scores.softmax(-1).detach(), atol=ATOL)
    assert torch.allclose(captured, fused, atol=ATOL)


def test_capture_with_padding_matches_fused_path_and_zeroes_padded_keys():
    attn = CrossAttention(8, 2).eval()
    x, kv = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    pad = torch.tensor([[False, False, False, True], [False, True, True, True]])
    with torch.no_grad():
        fused = attn(x, kv, pad)
        attn.capture = True
        captured = attn(x, kv, pad)
    assert torch.allclose(captured, fused, atol=ATOL)
    assert (attn.weights[0, :, :, 3] == 0).all() and (attn.weights[1, :, :, 1:] == 0).all()
    assert torch.allclose(attn.weights.sum(-1), torch.ones(2, 2, 3), atol=ATOL)


def decode(attn, x, chunks, pad=None):
    """Feed x (B, T, C) through attn in chunks of the given sizes with a KV cache; concat the outputs."""
    state, outs, start = FakeState(), [], 0
    for n in chunks:
        new_pad = None if pad is None else pad[:, start:start + n]
        outs.append(attn(x[:, start:start + n], new_pad, state=state))
        start += n
        state.offset = start
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("chunks", [[1, 1, 1, 1, 1], [2, 3], [3, 1, 1]])
def test_cached_self_attention_equals_full_causal_pass(chunks):
    attn = SelfAttention(8, 2, causal=True).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        assert torch.allclose(decode(attn, x, chunks), attn(x), atol=ATOL)


def test_cached_self_attention_with_padding_equals_full_pass():
    attn = SelfAttention(8, 2, causal=True).eval()
    x = torch.randn(2, 5, 8)
    pad = torch.tensor([[True, False, False, False, False], [True, True, False, False, False]])  # left padding
    with torch.no_grad():
        full = attn(x, pad)
        step_by_step = decode(attn, x, [2, 1, 1, 1], pad)  # pad mask of the new keys only
        state = FakeState()
        attn(x[:, :3], pad[:, :3], state=state)
        state.offset = 3
        whole_mask = attn(x[:, 3:], pad, state=state)  # pad mask covering every key so far
        attn.capture = True
        captured = attn(x, pad)
    assert torch.allclose(step_by_step, full, atol=ATOL)
    assert torch.allclose(whole_mask, full[:, 3:], atol=ATOL)
    # queries that see only padding (row 1, positions 0-1) get zero weights, not NaN, on both paths
    assert not full.isnan().any() and torch.allclose(captured, full, atol=ATOL)
    assert (attn.weights[1, :, :2] == 0).all()


def test_cross_attention_caches_encoder_keys_and_values():
    attn = CrossAttention(8, 2).eval()
    x, kv = torch.randn(1, 3, 8), torch.randn(1, 4, 8)
    state = FakeState()
    with torch.no_grad():
        first = attn(x[:, :1], kv, state=state)
        state.offset = 1
        later = attn(x[:, 1:], torch.randn(1, 4, 8), state=state)  # kv ignored once cached
        assert torch.allclose(torch.cat([first, later], 1), attn(x, kv), atol=ATOL)


# ---------------------------------------------------------------- positions and embeddings

def test_sinusoidal_values_follow_the_formula():
    dim = 6
    pe = SinusoidalPosition(dim, max_len=20)
    out = pe(torch.zeros(2, 10, dtype=torch.long))
    assert out.shape == (1, 10, dim)
    for pos in (0, 1, 7):
        for i in range(dim // 2):
            angle = pos / 10000.0 ** (2 * i / dim)
            assert out[0, pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert out[0, pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert "pe" not in pe.state_dict()
    state = FakeState()
    state.offset = 7
    assert torch.equal(pe(torch.zeros(1, 2, 4), state=state)[0], out[0, 7:9])
    assert SinusoidalPosition(5, max_len=4).pe.shape == (4, 5)  # odd dim
    with pytest.raises(ValueError, match="max_len"):
        pe(torch.zeros(1, 21, dtype=torch.long))


def test_position_embedding_uses_offset_and_checks_max_len():
    emb = PositionEmbedding(max_len=6, dim=4)
    ids = torch.zeros(3, 2, dtype=torch.long)
    assert torch.equal(emb(ids), emb.weight[:2].unsqueeze(0))
    state = FakeState()
    state.offset = 4
    assert torch.equal(emb(ids, state=state), emb.weight[4:6].unsqueeze(0))
    state.offset = 5
    with pytest.raises(ValueError, match="max_len=6"):
        emb(ids, state=state)


def test_token_embedding_scale_and_tying_with_lm_head():
    emb, scaled = TokenEmbedding(10, 4), TokenEmbedding(10, 4, scale=True)
    scaled.weight = emb.weight
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(emb(ids), emb.weight[ids])
    assert torch.allclose(scaled(ids), emb.weight[ids] * 2.0)
    head = LMHead(4, 10)
    assert head.weight.shape == emb.weight.shape and head.bias is None
    head.weight = emb.weight
    h = torch.randn(1, 3, 4)
    assert torch.allclose(head(h), h @ emb.weight.T)


def test_classifier_head_is_linear():
    head = ClassifierHead(4, 3)
    x = torch.randn(2, 4)
    assert torch.allclose(head(x), x @ head.weight.T + head.bias)


# ---------------------------------------------------------------- element-wise and small blocks

def test_input_norm_standardises_raw_features():
    m = InputNorm(mean=[30.0, 100.0, 50.0, 10.0], std=[2.0, 7.0, 3.0, 0.6])
    out = m(torch.tensor([[32.0, 107.0, 56.0, 11.2]]))
    assert torch.allclose(out, torch.tensor([[1.0, 1.0, 2.0, 2.0]]), atol=ATOL)
    assert list(m.parameters()) == [] and set(m.state_dict()) == {"mean", "std"}
    with pytest.raises(ValueError, match="length"):
        InputNorm(mean=[0.0, 1.0], std=[1.0])
    with pytest.raises(ValueError, match="> 0"):
        InputNorm(mean=[0.0], std=[0.0])


def test_activations():
    x = torch.tensor([-2.0, 0.0, 0.5, 3.0])
    assert torch.equal(step(x), torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.equal(step(x, threshold=0.5), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert step(torch.tensor([1, -1])).dtype == torch.float32
    assert torch.allclose(leaky_relu(x, negative_slope=0.1), torch.tensor([-0.2, 0.0, 0.5, 3.0]))
    assert torch.allclose(leaky_relu(x), torch.tensor([-0.02, 0.0, 0.5, 3.0]))
    assert torch.equal(relu(x), torch.tensor([0.0, 0.0, 0.5, 3.0]))
    assert torch.allclose(sigmoid(x), 1 / (1 + torch.exp(-x)))
    assert torch.allclose(tanh(x), torch.tanh(x))
    exact = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    approx = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    assert torch.allclose(gelu(x), exact, atol=ATOL)
    assert torch.allclose(gelu(x, approximate="tanh"), approx, atol=ATOL)
    assert torch.allclose(ACTIVATIONS["gelu_tanh"](x), approx, atol=ATOL)
    assert set(ACTIVATIONS) == {"relu", "gelu", "gelu_tanh", "sigmoid", "tanh", "leaky_relu", "step"}
    # feed_forward's schema lists the same names, so a typo is caught by the config check
    assert registry.get("feed_forward").args["activation"].type == (
        f"Literal[{', '.join(repr(k) for k in sorted(ACTIVATIONS))}]")


def test_softmax_and_add():
    x = torch.randn(2, 3)
    assert torch.allclose(softmax(x, dim=0).sum(0), torch.ones(3))
    assert torch.allclose(softmax(x), torch.exp(x) / torch.exp(x).sum(-1, keepdim=True))
    assert torch.equal(add(x, torch.ones(3)), x + 1)


def test_add_norm_post_and_pre():
    x, y = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    post = AddNorm(4)
    with torch.no_grad():
        post.norm.weight.uniform_()
        post.norm.bias.uniform_()
    assert torch.allclose(post(x, y), F.layer_norm(x + y, (4,), post.norm.weight, post.norm.bias, 1e-5), atol=ATOL)
    pre = AddNorm(4, order="pre")
    assert torch.equal(pre(x, y), x + y) and list(pre.parameters()) == []
    with pytest.raises(ValueError, match="order"):
        AddNorm(4, order="middle")


def test_feed_forward_equals_manual_composition():
    ff = FeedForward(4, 8, activation="gelu_tanh").eval()
    x = torch.randn(2, 3, 4)
    manual = ff.fc2(F.gelu(ff.fc1(x), approximate="tanh"))
    assert torch.allclose(ff(x), manual, atol=ATOL)
    assert ff.fc2.residual_projection is True and not hasattr(ff.fc1, "residual_projection")
    with pytest.raises(ValueError, match="known: .*gelu_tanh.*relu"):
        FeedForward(4, 8, activation="swish")


# ---------------------------------------------------------------- the Llama family's blocks

ROPES = [{"theta": 10000.0}, {"theta": 500000.0, "type": "linear", "factor": 4.0},
         {"theta": 500000.0, "type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_len": 16}]
HF_ROPE = {"theta": "rope_theta", "type": "rope_type", "original_max_len": "original_max_position_embeddings"}


@pytest.mark.parametrize("rope", ROPES, ids=lambda r: r.get("type", "default"))
def test_rotary_matches_transformers(rope):
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    from transformers import LlamaConfig
    config = LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=64,
                         rope_parameters={HF_ROPE.get(k, k): v for k, v in rope.items()})
    reference = llama.LlamaRotaryEmbedding(config)
    assert torch.equal(inverse_frequencies(16, **rope), reference.inv_freq)
    q, k = torch.randn(2, 4, 7, 16), torch.randn(2, 2, 7, 16)
    cos, sin = reference(q, torch.arange(5, 12)[None])
    ours = Rotary(16, rope)(q, k, offset=5)  # positions 5 .. 11
    for a, b in zip(ours, llama.apply_rotary_pos_emb(q, k, cos, sin)):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="rope.thet: unknown key"):
        Rotary(16, {"thet": 1.0})
    with pytest.raises(ValueError, match="rope.original_max_len: required for type llama3"):
        Rotary(16, {"type": "llama3", "factor": 8.0})


def test_rms_norm_matches_transformers_formula():
    norm = RMSNorm(8, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_()
    x = torch.randn(2, 3, 8) * 5
    expected = norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
    assert torch.allclose(norm(x), expected, atol=ATOL) and RMSNorm(4).eps == 1e-6


def test_gated_feed_forward_equals_manual_composition():
    for activation, act in (("swiglu", F.silu), ("geglu", F.gelu)):
        ff = GatedFeedForward(4, 8, activation=activation, bias=True).eval()
        x = torch.randn(2, 3, 4)
        assert torch.allclose(ff(x), ff.down(act(ff.gate(x)) * ff.up(x)), atol=ATOL)
    assert ff.down.residual_projection is True and ff.gate.bias is not None
    with pytest.raises(ValueError, match="known: swiglu, geglu"):
        GatedFeedForward(4, 8, activation="reglu")


def reference_attention(attn, x, window=None):
    """Eager attention from the block's own projections: rotary, repeated key/value heads, a (banded) causal mask."""
    B, T, _ = x.shape
    H, Hkv, hd = attn.heads, attn.kv_heads, attn.head_dim
    q, k, v = (lin(x).view(B, T, n, hd).transpose(1, 2) for lin, n in ((attn.q, H), (attn.k, Hkv), (attn.v, Hkv)))
    if attn.q_norm is not None:
        q, k = (t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * n.weight
                for t, n in ((q, attn.q_norm), (k, attn.k_norm)))
    q, k = attn.rotary(q, k)
    k, v = (t.repeat_interleave(H // Hkv, dim=1) for t in (k, v))
    i, j = torch.arange(T)[:, None], torch.arange(T)[None]
    allowed = (j <= i) & ((j > i - window) if window else True)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(hd)).masked_fill(~allowed, float("-inf"))
    return attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * hd))


@pytest.mark.parametrize("kv_heads, window, qk_norm", [(4, None, False), (2, 3, False), (1, None, True), (2, 9, True)])
def test_grouped_query_attention_matches_eager_reference(kv_heads, window, qk_norm):
    attn = GroupedQueryAttention(16, 4, kv_heads=kv_heads, rope={"theta": 100.0}, sliding_window=window,
                                 qk_norm=qk_norm, bias=["q", "k", "v"]).eval()
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        expected = reference_attention(attn, x, window)
        assert torch.allclose(attn(x), expected, atol=ATOL)
        attn.capture = True
        assert torch.allclose(attn(x), expected, atol=ATOL)
    w = attn.weights  # (B, H, T, T): every query head, rows sum to 1, nothing after or beyond the window
    assert w.shape == (2, 4, 7, 7) and torch.allclose(w.sum(-1), torch.ones(2, 4, 7), atol=ATOL)
    i, j = torch.arange(7)[:, None], torch.arange(7)[None]
    assert (w[..., (j > i) | (j <= i - (window or 7))] == 0).all()
    assert [n for n in ("q", "k", "v", "proj") if getattr(attn, n).bias is not None] == ["q", "k", "v"]
    with pytest.raises(ValueError, match="bias: unknown projection 'o'"):
        GroupedQueryAttention(16, 4, bias=["q", "o"])
    with pytest.raises(ValueError, match="kv_heads: 3 does not divide heads=4"):
        GroupedQueryAttention(16, 4, kv_heads=3)


@pytest.mark.parametrize("chunks", [[1] * 9, [4, 1, 1, 3], [6, 3]])
def test_cached_grouped_attention_with_rope_and_window_equals_full_pass(chunks):
    attn = GroupedQueryAttention(16, 4, kv_heads=2, rope={"theta": 100.0}, sliding_window=3).eval()
    x = torch.randn(2, 9, 16)
    state, outs, start, buffers = FakeState(), [], 0, set()
    with torch.no_grad():
        for n in chunks:
            outs.append(attn(x[:, start:start + n], state=state))
            start += n
            state.offset = start
            cache = state.slot(attn)["kv"]
            buffers.add(id(cache.k))
            assert cache.end - cache.start <= max(3, n + 2)  # only what a later query can still see is kept
        assert torch.allclose(torch.cat(outs, dim=1), attn(x), atol=ATOL)
    assert len(buffers) == 1  # 9 positions fit the first 64-row buffer: no step copied the cache


def test_kv_cache_grows_by_doubling_keeps_its_window_and_follows_beams():
    cache = KVCache()
    k = torch.arange(70.0).view(1, 1, 70, 1).expand(2, 1, 70, 1)
    cache.update(k[:, :, :60], k[:, :, :60])
    first = cache.k
    for t in range(60, 64):  # room left in the first buffer: each step writes one row in place
        out, _, _ = cache.update(k[:, :, t:t + 1], k[:, :, t:t + 1])
        assert cache.k is first and out.shape[2] == t + 1
    out, _, _ = cache.update(k[:, :, 64:70], k[:, :, 64:70])
    assert cache.k.shape[2] == 128 and torch.equal(out, k)
    windowed = KVCache(window=4)
    for t in range(70):
        out, _, _ = windowed.update(k[:, :, t:t + 1], k[:, :, t:t + 1])
        assert torch.equal(out, k[:, :, max(0, t - 3):t + 1])  # the last 4 positions, its own included
    windowed.reorder(torch.tensor([1, 1]))
    assert windowed.k.shape[0] == 2
    with pytest.raises(ValueError, match="pad_mask covers 3 keys; expected 1 .this call. or 71"):
        windowed.update(k[:, :, :1], k[:, :, :1], torch.zeros(2, 3, dtype=torch.bool))


# ---------------------------------------------------------------- schemas: ast reading vs. the decorator

EXPECTED_BLOCKS = {
    "linear", "relu", "gelu", "sigmoid", "tanh", "leaky_relu", "step", "softmax", "feed_forward", "dropout",
    "layer_norm", "add", "add_norm", "input_norm", "token_embedding", "position_embedding", "sinusoidal_position",
    "self_attention", "cross_attention", "classifier_head", "lm_head", "attention", "rms_norm", "gated_feed_forward",
    "padding_mask", "pool",
}


def scanned_builtins():
    files = sorted(p for p in registry.BUILTIN_DIR.glob("*.py") if not p.name.startswith("_"))
    return [s for p in files for s in registry._scan_file(p, f"blocks.{p.stem}")]


def test_every_builtin_is_scanned_once():
    names = [s.name for s in scanned_builtins()]
    assert sorted(names) == sorted(EXPECTED_BLOCKS)


@pytest.mark.parametrize("schema", scanned_builtins(), ids=lambda s: s.name)
def test_importing_a_builtin_registers_the_scanned_schema(schema):
    """The decorator reads the same source the scan read: importing the module changes nothing but `obj`."""
    obj = registry.get(schema.name).load()
    live = registry.get(schema.name)
    assert live.obj is obj is getattr(importlib.import_module(schema.module), schema.qualname)
    assert (live.args, live.ports, live.stateful, live.doc, live.traits) == \
        (schema.args, schema.ports, schema.stateful, schema.doc, schema.traits)
    assert schema.doc


def test_schema_details():
    s = {x.name: x for x in scanned_builtins()}
    assert s["gelu"].args["approximate"].type == "Literal['none', 'tanh']"
    assert s["cross_attention"].args["kv_dim"] == registry.Arg("kv_dim", "int | None", None, False)
    assert s["input_norm"].args["mean"].type == "list[float]" and s["input_norm"].args["mean"].required
    assert s["softmax"].args["dim"].default == -1
    assert [(p.name, p.required) for p in s["self_attention"].ports] == [("x", True), ("pad_mask", False)]
    assert s["self_attention"].stateful and s["position_embedding"].stateful and not s["linear"].stateful
    assert [p.name for p in s["cross_attention"].ports] == ["x", "kv", "kv_pad_mask"]
    assert s["cross_attention"].traits == {"attention": ("x", "kv")} and s["self_attention"].traits["attention"] == ("x",)
    assert s["position_embedding"].traits == {"positions": "max_len"} and not s["linear"].traits
    assert s["attention"].traits == {"attention": ("x",)} and s["attention"].stateful
    assert s["attention"].args["bias"].type == "bool | list[str]" and s["attention"].args["rope"].default is None
    assert s["gated_feed_forward"].args["activation"].type == "Literal['swiglu', 'geglu', 'geglu_tanh']"
