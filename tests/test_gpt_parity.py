"""The config-built GPT-2 against transformers' GPT2LMHeadModel: same weights, same logits, same greedy text."""
import json

import pytest
import torch

from builder.config import compose, resolve
from builder.errors import ConfigError
from builder.graph.build import build_model
from builder.serve.hf_gpt2 import from_hf, load_gpt2_dir, model_config, to_hf

transformers = pytest.importorskip("transformers")

SIZES = dict(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4)


def hf_gpt2(attn="eager", **overrides):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(**{**SIZES, **overrides}, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0, attn_implementation=attn)
    return transformers.GPT2LMHeadModel(cfg).eval()


def ours_like(hf):
    cfg = compose(["model=gpt", f"model.vocab_size={SIZES['vocab_size']}", f"model.block_size={SIZES['n_positions']}",
                   f"model.n_layer={SIZES['n_layer']}", f"model.n_head={SIZES['n_head']}",
                   f"model.d_model={SIZES['n_embd']}", "model.dropout=0.0"])
    model = build_model(resolve(cfg.model, "model")).eval()
    model.load_state_dict(from_hf(hf.state_dict(), SIZES["n_layer"]), strict=True)
    return model


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_same_logits_as_transformers(attn):
    hf = hf_gpt2(attn)
    ours = ours_like(hf)
    idx = torch.randint(0, SIZES["vocab_size"], (3, SIZES["n_positions"]))
    with torch.no_grad():
        assert torch.allclose(ours(idx), hf(idx).logits, atol=1e-5, rtol=0)
    back = to_hf(ours.state_dict(), SIZES["n_layer"])
    for name, t in hf.state_dict().items():
        if name in back:
            assert torch.equal(back[name], t), name


def save_hf_dir(path):
    """A tiny random GPT2LMHeadModel with save_pretrained, and a byte-level BPE tokenizer trained here."""
    from builder.tokenizer import bpe_tokenizer
    tok = bpe_tokenizer(["the cat sat on the mat, and the dog sat on the log. " * 50], vocab_size=SIZES["vocab_size"] + 200)
    hf = hf_gpt2("sdpa", vocab_size=tok.vocab_size, initializer_range=0.5)  # large weights: a varied text
    hf.save_pretrained(path)
    tok.save(path / "tokenizer.json")
    assert tok.eos_id == hf.config.eos_token_id == 0
    return hf, tok


def test_hf_directory_greedy_generation_matches(tmp_path, capsys):
    from builder.cli.generate import main, run
    hf, tok = save_hf_dir(tmp_path)
    prompt = "the dog sat"
    ids = torch.tensor([tok.encode(prompt)])
    # 15 new tokens after a 3-token prompt stay inside the 24-position window, as transformers requires
    ref = hf.generate(ids, max_new_tokens=15, do_sample=False, attention_mask=torch.ones_like(ids), pad_token_id=0)
    args = [f"ckpt={tmp_path}", f"prompt={prompt}", "max_new_tokens=15", "temperature=0"]
    text = run(args)
    out = capsys.readouterr().out
    assert main(args) is None and capsys.readouterr().out == out  # the console script returns no exit text
    new = ref[0, ids.shape[1]:].tolist()
    new = new[: new.index(0)] if 0 in new else new  # both stop at <|endoftext|>
    assert out == text + "\n" and text == prompt + tok.decode(new)
    _, config, tokenizer = load_gpt2_dir(tmp_path)
    assert config["model"]["n_layer"] == SIZES["n_layer"] and tokenizer == tok.to_str()


def test_unsupported_hf_variant_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="layer_norm_epsilon=0.001 is not supported"):
        model_config({"model_type": "gpt2", "layer_norm_epsilon": 1e-3})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", **SIZES}))
    with pytest.raises(ConfigError, match="no model.safetensors"):
        load_gpt2_dir(tmp_path)
