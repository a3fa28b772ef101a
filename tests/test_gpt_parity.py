"""The config-built GPT-2 against transformers' GPT2LMHeadModel: same weights, same logits, same greedy text, and
back to a directory transformers loads (the GPT-2 table, conf/hf/gpt2.yaml)."""
import json
from pathlib import Path

import pytest
import torch

from builder.config import compose, resolve
from builder.errors import ConfigError
from builder.graph.build import build_model
from builder.serve import hf as hf_dirs
from builder.serve.hf_table import Family

transformers = pytest.importorskip("transformers")

SIZES = dict(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4)


def hf_gpt2(attn="eager", **overrides):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(**{**SIZES, **overrides}, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0, attn_implementation=attn)
    return transformers.GPT2LMHeadModel(cfg).eval()


def ours_like(hf, tensors=None):
    cfg = compose(["model=gpt", f"model.vocab_size={SIZES['vocab_size']}", f"model.block_size={SIZES['n_positions']}",
                   f"model.n_layer={SIZES['n_layer']}", f"model.n_head={SIZES['n_head']}",
                   f"model.d_model={SIZES['n_embd']}", "model.dropout=0.0"])
    model = build_model(resolve(cfg.model, "model")).eval()
    tensors = hf.state_dict() if tensors is None else tensors
    model.load_state_dict(Family("gpt2").weights_in(tensors, model, "test"), strict=True)
    return model


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_same_logits_as_transformers(attn):
    hf = hf_gpt2(attn)
    ours = ours_like(hf)
    idx = torch.randint(0, SIZES["vocab_size"], (3, SIZES["n_positions"]))
    with torch.no_grad():
        assert torch.allclose(ours(idx), hf(idx).logits, atol=1e-5, rtol=0)
    # GPT2Model's and the original GPT-2 files' names: no "transformer." prefix, causal-mask buffers beside
    old = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()} | {"h.0.attn.masked_bias": torch.zeros(())}
    assert all(torch.equal(a, b) for a, b in zip(ours_like(hf, old).state_dict().values(), ours.state_dict().values()))
    back = Family("gpt2").weights_out(ours)
    assert set(back) == set(hf.state_dict()) - {"lm_head.weight"}  # tied: stored once, as transformers does
    for name, t in back.items():
        assert torch.equal(hf.state_dict()[name], t), name


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
    _, config, tokenizer = hf_dirs.load_dir(tmp_path)
    assert config["model"]["n_layer"] == SIZES["n_layer"] and tokenizer == tok.to_str()


def test_round_trip_to_a_directory_transformers_loads(tmp_path, capsys):
    from builder.cli.export import main as export
    hf, tok = save_hf_dir(tmp_path / "hf")
    export([f"ckpt={tmp_path / 'hf'}", "format=hf", f"out={tmp_path / 'back'}"])
    assert "config.json, model.safetensors, tokenizer.json, tokenizer_config.json" in capsys.readouterr().out
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    assert type(back) is transformers.GPT2LMHeadModel and back.config.eos_token_id == tok.eos_id
    idx = torch.randint(0, tok.vocab_size, (2, SIZES["n_positions"]))
    with torch.no_grad():
        assert torch.allclose(back(idx).logits, hf(idx).logits, atol=1e-4, rtol=0)
    text = "the cat sat on the log"
    ids = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")(text, add_special_tokens=False)["input_ids"]
    assert ids == tok.encode(text)
    export([f"ckpt={tmp_path / 'hf'}", f"out={tmp_path / 'ours'}"])  # without format: our own export, as before
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["config.yaml", "model.safetensors", "tokenizer.json"]


def test_unsupported_hf_variant_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="layer_norm_epsilon=0.001 is not supported"):
        Family("gpt2").variables({"model_type": "gpt2", "layer_norm_epsilon": 1e-3}, "config.json")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", **SIZES}))
    with pytest.raises(ConfigError, match="no model.safetensors"):
        hf_dirs.load_dir(tmp_path)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the peak memory from /proc (Linux)")
def test_loading_holds_the_weights_once(tmp_path):
    """A GPT-2 directory with a large vocabulary (the embedding is nearly all of it) loads in little more memory
    than its weights: the tied LM head is never allocated apart, and each tensor of the file is read straight
    into its parameter (a copy of the embedding on the way, or a head of its own, would add 120 MB); the same
    for the model exported as our own directory (model.safetensors + config.yaml)."""
    import subprocess
    import sys

    from builder.serve import checkpoint
    for name, vocab in (("tiny", 100), ("large", 120_000)):
        cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=16, n_embd=256, n_layer=1, n_head=4)
        transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / name)
    checkpoint.export(checkpoint.load(tmp_path / "large"), tmp_path / "exported")
    weights = (tmp_path / "large" / "model.safetensors").stat().st_size
    for path in (tmp_path / "large", tmp_path / "exported"):
        code = (  # VmHWM: the peak of this process image (ru_maxrss would count the parent's memory before exec)
            "import re, torch\n"
            "from builder.serve import checkpoint\n"
            "def status(key): return int(re.search(key + r':\\s+(\\d+) kB', open('/proc/self/status').read())[1]) * 1024\n"
            f"checkpoint.load({str(tmp_path / 'tiny')!r})  # what loading imports and sets up\n"
            "before = status('VmRSS')\n"
            f"model = checkpoint.load({str(path)!r}).model\n"
            "print(status('VmHWM') - before)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        growth = int(done.stdout.split()[-1])
        assert growth < 1.25 * weights, f"{path.name}: the process grew {growth / 1e6:.0f} MB for {weights / 1e6:.0f} MB"


def test_an_exported_directory_with_weights_that_do_not_fit_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from builder.serve import checkpoint
    hf, _ = save_hf_dir(tmp_path / "hf")
    out = checkpoint.export(checkpoint.load(tmp_path / "hf"), tmp_path / "exported")
    tensors = load_file(out / "model.safetensors")
    for change, message in ((lambda t: t.pop("graph.ln_f.weight"), "has no tensor for graph.ln_f.weight"),
                            (lambda t: t.update(extra=torch.zeros(2)), "tensor extra has no place in this model"),
                            (lambda t: t.update({"graph.ln_f.weight": torch.zeros(3)}), r"tensor graph.ln_f.weight has shape \(3,\)")):
        changed = dict(tensors)
        change(changed)
        save_file(changed, out / "model.safetensors")
        with pytest.raises(ConfigError, match=message):
            checkpoint.load(out)
