"""conf/model/llama.yaml against transformers' Llama, Mistral, Qwen2 and Phi-3: a Hugging Face directory loaded
with ckpt=DIR gives the same logits and the same KV-cached greedy text, and exports (format=hf) to a directory
that transformers loads with the same logits; unsupported options fail in one line naming the key."""
import json
import os
import pickle

import pytest
import torch

from builder.errors import ConfigError
from builder.serve import checkpoint, hf
from builder.serve.generation import decode, lm_step

transformers = pytest.importorskip("transformers")

SIZES = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             initializer_range=0.3, bos_token_id=None, eos_token_id=None, pad_token_id=None)
LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 8}
VARIANTS = {  # name: (architecture, config); prompts of 5 tokens, 10 new ones: 15 positions
    "llama-mha-untied": ("Llama", dict(num_key_value_heads=4)),
    "llama-gqa-tied-linear": ("Llama", dict(num_key_value_heads=2, tie_word_embeddings=True,
                                            rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})),
    "llama-mqa-llama3-bias": ("Llama", dict(num_key_value_heads=1, attention_bias=True, mlp_bias=True,
                                            rope_parameters=LLAMA3, rms_norm_eps=1e-5)),
    "mistral-gqa-window4": ("Mistral", dict(num_key_value_heads=2, sliding_window=4, head_dim=16)),
    "qwen2-gqa-tied": ("Qwen2", dict(num_key_value_heads=2, tie_word_embeddings=True,
                                     rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
    "phi3-fused-window6": ("Phi3", dict(num_key_value_heads=2, sliding_window=6)),
}


def hf_model(arch, **config):
    torch.manual_seed(0)
    cfg = getattr(transformers, f"{arch}Config")(**{**SIZES, **config}, attn_implementation="eager")
    return getattr(transformers, f"{arch}ForCausalLM")(cfg).eval()  # transformers 5 builds in train mode


def greedy_hf(model, prompt, n=10):
    return model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                          attention_mask=torch.ones_like(prompt), pad_token_id=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_logits_and_greedy_text_and_back(variant, tmp_path):
    arch, config = VARIANTS[variant]
    ref = hf_model(arch, **config)
    ref.save_pretrained(tmp_path / "hf")
    loaded = checkpoint.load(tmp_path / "hf")
    ours = loaded.model
    idx = torch.randint(0, SIZES["vocab_size"], (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(idx).logits
        diff = (ours(idx) - expected).abs().max().item()
    assert diff < 1e-4, f"{variant}: max |logit difference| {diff:.2e}"
    prompt = idx[:2, :5]
    want = greedy_hf(ref, prompt)
    assert torch.equal(decode(lm_step(ours), prompt, max_new_tokens=10), want)
    assert torch.equal(decode(lm_step(ours, use_cache=False), prompt, max_new_tokens=10), want)
    back = transformers.AutoModelForCausalLM.from_pretrained(hf.export(loaded, tmp_path / "back")).eval()
    with torch.no_grad():
        assert (back(idx).logits - expected).abs().max().item() < 1e-4
    if arch != "Phi3":  # Phi-3 is Llama's graph with fused matrices: it goes out as Llama or Mistral
        assert type(back) is type(ref)
        theirs = ref.state_dict()
        assert all(torch.equal(t, theirs[n]) for n, t in back.state_dict().items())


def test_sharded_safetensors_and_the_plan_command(tmp_path, capsys):
    from builder.cli.plan import main as plan
    ref = hf_model("Llama", num_key_value_heads=2)
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    idx = torch.randint(0, SIZES["vocab_size"], (2, 9))
    with torch.no_grad():
        assert torch.allclose(checkpoint.load(tmp_path).model(idx), ref(idx).logits, atol=1e-4, rtol=0)
    plan([f"ckpt={tmp_path}", f"out={tmp_path / 'plan'}"])
    assert "attention" in capsys.readouterr().out


def test_a_model_of_ours_exports_with_its_tokenizer(tmp_path, capsys):
    """llama_char's graph with a character tokenizer: transformers reads the same ids and logits."""
    from builder.cli.export import main as export
    from builder.config import compose, resolve
    from builder.graph.build import build_model
    from builder.tokenizer import Tokenizer, char_tokenizer
    tok = char_tokenizer("To be, or not to be: that is the question.")
    cfg = resolve(compose(["experiment=llama_char", f"model.vocab_size={tok.vocab_size}", "model.n_layer=2",
                           "model.d_model=32", "model.d_ff=48"]), "")
    torch.manual_seed(0)
    model = build_model(cfg["model"]).eval()
    run = checkpoint.export(checkpoint.Loaded(model, cfg, tmp_path, tok.to_str()), tmp_path / "ours")
    export([f"ckpt={run}", "format=hf", f"out={tmp_path / 'hf'}"])
    assert "config.json, model.safetensors, tokenizer.json, tokenizer_config.json" in capsys.readouterr().out
    text = "not to be"
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ids = hf_tok(text, add_special_tokens=False)["input_ids"]
    assert ids == Tokenizer.from_str(tok.to_str()).encode(text)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == "LlamaForCausalLM" and theirs.config.tie_word_embeddings
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.allclose(theirs(x).logits, model(x), atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="format: 'tflite' is not allowed; expected one of builder, hf, onnx, gguf"):
        from builder.cli.export import _main
        _main([f"ckpt={run}", "format=tflite", f"out={tmp_path / 'x'}"])


def config_dir(tmp_path, **config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("config, line", [
    ({"model_type": "falcon"}, 'model_type="falcon" is not supported (supported: bert, gpt2, llama, mistral, phi3, qwen2'),
    ({"model_type": "llama", "hidden_act": "relu"}, 'hidden_act="relu" is not supported (supported: "silu"'),
    ({"model_type": "llama", "rope_parameters": {"rope_type": "yarn", "factor": 4.0}},
     'rope_parameters.rope_type="yarn" is not supported'),
    ({"model_type": "llama", "rope_scaling": {"type": "dynamic", "factor": 2.0}}, 'rope_scaling.type="dynamic"'),
    ({"model_type": "mistral", "rope_parameters": {"rope_theta": 1e4, "mscale": 1.0}},
     "rope_parameters.mscale is not supported"),
    ({"model_type": "qwen2", "use_sliding_window": True}, "use_sliding_window=true is not supported"),
    ({"model_type": "phi3", "rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}},
     "rope_parameters.partial_rotary_factor=0.5 is not supported"),
    ({"model_type": "gpt2", "layer_norm_epsilon": 1e-3}, "layer_norm_epsilon=0.001 is not supported"),
])
def test_unsupported_options_fail_in_one_line_naming_the_key(tmp_path, config, line):
    with pytest.raises(ConfigError) as e:
        checkpoint.load(config_dir(tmp_path, **config))
    assert len(e.value.problems) == 1 and line in e.value.problems[0]
    assert e.value.problems[0].startswith(str(tmp_path / "config.json"))


class Boom:
    def __reduce__(self):
        return os.system, ("touch unpickled",)


def test_weights_are_read_from_safetensors_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(Boom()))
    config_dir(tmp_path, model_type="llama", **{k: v for k, v in SIZES.items() if k != "initializer_range"})
    with pytest.raises(ConfigError, match="no model.safetensors .*pytorch_model.bin is not read: only safetensors"):
        checkpoint.load(tmp_path)
    assert not (tmp_path / "unpickled").exists()


def test_safetensors_are_read_a_tensor_at_a_time_as_the_library_reads_them(tmp_path):
    from safetensors.torch import load_file, save_file
    tensors = {"f32": torch.randn(3, 4), "f16": torch.randn(5).half(), "bf16": torch.randn(2, 2).bfloat16(),
               "i64": torch.arange(6).reshape(2, 3), "flag": torch.tensor([True, False]), "none": torch.zeros(0, 3)}
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    read = dict(hf.read_weights(tmp_path).items())
    expected = load_file(tmp_path / "model.safetensors")
    assert read.keys() == expected.keys()
    for name, value in expected.items():
        assert read[name].dtype == value.dtype and torch.equal(read[name], value), name
    for name, stored in hf.read_weights(tmp_path).entries():  # straight into a tensor of the caller's
        out = torch.full(stored.shape, 7, dtype=stored.dtype)
        version = out._version
        stored.read_into(out)
        assert torch.equal(out, expected[name]) and out._version > version, name
        if name == "f32":
            with pytest.raises(ValueError, match=r"f32: cannot read \(3, 4\) torch.float32 into \(4, 3\)"):
                stored.read_into(torch.empty(4, 3))
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-8])
    with pytest.raises(ConfigError, match=r"model.safetensors is truncated \(tensor "):
        dict(hf.read_weights(tmp_path).items())
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ConfigError, match=r"model.safetensors is not a safetensors file"):
        hf.read_weights(tmp_path)


def test_weights_that_disagree_with_the_config_are_named(tmp_path):
    ref = hf_model("Llama", num_key_value_heads=2, attention_bias=True)
    ref.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "attention_bias": False}))
    with pytest.raises(ConfigError, match=r"tensor model.layers.0.self_attn.q_proj.bias has no place in this model"):
        checkpoint.load(tmp_path)


def test_a_graph_no_family_holds_is_refused_for_export():
    from builder.config import compose, resolve
    cfg = resolve(compose(["experiment=llama_char", "model.vocab_size=11", "model.qk_norm=true"]), "")
    with pytest.raises(ConfigError, match=r"format=hf: the model is none of the Hugging Face families \(.*gpt2: .*"
                                          r"llama: qk_norm=true \(this family has qk_norm=false\)"):
        hf.family_for(cfg["model"])
