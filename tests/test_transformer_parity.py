"""The config-built encoder-decoder (conf/model/transformer.yaml) against torch.nn.Transformer layers with the
same weights, and incremental decoding (KV cache, cached encoder) against the full forward pass."""
import functools
import math

import pytest
import torch
from torch import nn

from builder.config import compose, resolve
from builder.graph.decoding import DecodeState
from builder.graph.build import build_model

D, H, FF, N_ENC, N_DEC, SRC_V, TGT_V = 16, 2, 32, 2, 3, 11, 13
ATOL = 1e-5


@functools.cache
def tiny_transformer(share: bool = False):
    """Built once per variant (composing the config is the slow part); tests only read it."""
    extra = {"share_embeddings": "src_emb", "tgt_vocab_size": SRC_V} if share else {}
    overrides = [f"model.d_model={D}", f"model.n_head={H}", f"model.d_ff={FF}", f"model.n_encoder_layers={N_ENC}",
                 f"model.n_decoder_layers={N_DEC}", f"model.src_vocab_size={SRC_V}", f"model.tgt_vocab_size={TGT_V}",
                 "model.max_len=32", "model.dropout=0.0"] + [f"model.{k}={v}" for k, v in extra.items()]
    cfg = resolve(compose(["model=transformer"] + overrides).model, "model")
    cfg["outputs"] = {"logits": "head", "dec": "decoder"}  # the decoder stack's output, before the head
    torch.manual_seed(0)
    return build_model(cfg).eval()


def reference_stacks(model) -> tuple[nn.TransformerEncoder, nn.TransformerDecoder]:
    """torch's post-norm layers (ReLU, dropout 0, no final norm) holding our model's weights."""
    enc_layer = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=False)
    dec_layer = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=False)
    enc = nn.TransformerEncoder(enc_layer, N_ENC, norm=None, enable_nested_tensor=False).eval()
    dec = nn.TransformerDecoder(dec_layer, N_DEC, norm=None).eval()
    g = model.graph
    with torch.no_grad():
        for ref, ours in zip(enc.layers, g.encoder):
            copy_attention(ref.self_attn, ours.attn.qkv.weight, ours.attn.qkv.bias, ours.attn.proj)
            copy_ff_norms(ref, ours.ff, [ours.norm1, ours.norm2])
        for ref, ours in zip(dec.layers, g.decoder):
            copy_attention(ref.self_attn, ours.self_attn.qkv.weight, ours.self_attn.qkv.bias, ours.self_attn.proj)
            c = ours.cross  # separate q and fused kv projections -> one in_proj of rows [q; k; v]
            copy_attention(ref.multihead_attn, torch.cat([c.q.weight, c.kv_proj.weight]),
                           torch.cat([c.q.bias, c.kv_proj.bias]), c.proj)
            copy_ff_norms(ref, ours.ff, [ours.norm1, ours.norm2, ours.norm3])
    return enc, dec


def copy_attention(mha, in_w, in_b, proj):
    mha.in_proj_weight.copy_(in_w)
    mha.in_proj_bias.copy_(in_b)
    mha.out_proj.weight.copy_(proj.weight)
    mha.out_proj.bias.copy_(proj.bias)


def copy_ff_norms(ref, ff, norms):
    ref.linear1.load_state_dict(ff.fc1.state_dict())
    ref.linear2.load_state_dict(ff.fc2.state_dict())
    for i, norm in enumerate(norms, start=1):
        getattr(ref, f"norm{i}").load_state_dict(norm.norm.state_dict())


def embed(weight, ids):
    """Scaled embedding plus the paper's sinusoids, written out independently of the blocks."""
    T = ids.shape[1]
    pos = torch.arange(T, dtype=torch.float32)[:, None]  # (T, 1)
    i = torch.arange(0, D, 2, dtype=torch.float32)  # (D/2,)
    angle = pos / 10000 ** (i / D)  # (T, D/2)
    pe = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)  # (T, D) interleaved sin, cos
    return weight[ids] * math.sqrt(D) + pe  # (B, T, D)


def batch(tgt_vocab=TGT_V):
    g = torch.Generator().manual_seed(1)
    src = torch.randint(0, SRC_V, (3, 7), generator=g)  # (B, S)
    tgt = torch.randint(0, tgt_vocab, (3, 6), generator=g)  # (B, T)
    src_len, tgt_len = torch.tensor([7, 4, 1]), torch.tensor([6, 2, 5])
    src_pad = torch.arange(7)[None] >= src_len[:, None]  # (B, S) True at padding
    tgt_pad = torch.arange(6)[None] >= tgt_len[:, None]  # (B, T)
    return src, src_pad, tgt, tgt_pad


@pytest.mark.parametrize("share", [False, True])
def test_matches_torch_transformer_layers(share):
    model = tiny_transformer(share)
    enc, dec = reference_stacks(model)
    src, src_pad, tgt, tgt_pad = batch(SRC_V if share else TGT_V)
    g = model.graph
    with torch.no_grad():
        out = model(src, src_pad, tgt, tgt_pad)
        memory = enc(embed(g.src_emb.weight, src), src_key_padding_mask=src_pad)  # (B, S, D)
        causal = torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool).triu(1)  # (T, T) True = blocked
        ref = dec(embed(g.tgt_emb.weight, tgt), memory, tgt_mask=causal, tgt_is_causal=True,
                  tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)  # (B, T, D)
    keep = ~tgt_pad  # compare real target positions only
    assert torch.allclose(out["dec"][keep], ref[keep], atol=ATOL)
    ref_logits = ref @ g.tgt_emb.weight.T  # the head is tied to the target embedding
    assert torch.allclose(out["logits"][keep], ref_logits[keep], atol=ATOL)
    if share:
        assert g.tgt_emb.weight is g.src_emb.weight


def test_incremental_decoding_matches_full_forward():
    model = tiny_transformer()
    src, src_pad, tgt, _ = batch()
    no_pad = torch.zeros_like(tgt, dtype=torch.bool)
    with torch.no_grad():
        full = model(src, src_pad, tgt, no_pad)["logits"]  # (B, T, V)
        state = DecodeState(static=("src", "src_pad"))
        steps = []
        for t in range(tgt.shape[1]):
            steps.append(model(src, src_pad, tgt[:, t:t + 1], no_pad[:, t:t + 1], state=state)["logits"])
            state.advance(1)
    assert "encoder" in state.values  # computed once, reused at every step
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=ATOL)


def decoded(model, use_cache=True, beam=None, eos=None, length_penalty=1.0, n=8):
    """Token ids after <s> (id 0) for the test batch's sources; `beam`: run beam_search with that many beams."""
    from builder.contract import Roles
    from builder.serve.generation import beam_search, decode
    from builder.serve.seq2seq import seq2seq_step
    roles = Roles({"name": "seq2seq", "inputs": {"source": "src", "source_padding": "src_pad", "target": "tgt",
                                                 "target_padding": "tgt_pad"}, "outputs": {"logits": "logits"},
                   "sizes": {}}, model.spec)
    src, src_pad, _, _ = batch()
    prefix = torch.zeros(src.shape[0], 1, dtype=torch.long)  # (B, 1)
    new_state = lambda: DecodeState(static=("src", "src_pad"))  # noqa: E731
    if beam is None:
        return decode(seq2seq_step(model, roles, src, src_pad, 1, use_cache), prefix, max_new_tokens=n, eos_id=eos,
                      new_state=new_state)
    return beam_search(seq2seq_step(model, roles, src, src_pad, beam, use_cache), prefix, max_new_tokens=n,
                       num_beams=beam, eos_id=eos, length_penalty=length_penalty, new_state=new_state)


def test_one_beam_is_greedy():
    model = tiny_transformer()
    greedy = decoded(model)
    assert torch.equal(decoded(model, beam=1), greedy)
    eos = int(greedy[0, 3])  # a token greedy decoding does emit, so that some rows end early
    ended = decoded(model, eos=eos)
    assert (ended == eos).any()
    # raw log-probability sums (no length normalisation): one beam keeps exactly greedy's choices
    assert torch.equal(decoded(model, beam=1, eos=eos, length_penalty=0.0), ended)


def test_cached_and_uncached_decoding_agree():
    model = tiny_transformer()
    assert torch.equal(decoded(model, use_cache=False), decoded(model))
    assert torch.equal(decoded(model, beam=3, use_cache=False), decoded(model, beam=3))
