"""builder-export format=onnx|gguf: onnxruntime's logits against ours for the classifier, GPT, Llama variants and
the translation Transformer, and the GGUF file's tensors and metadata read back with the gguf package."""
import json

import numpy as np
import pytest
import torch

from builder.cli.export import SPEC, main as export
from builder.config import compose, resolve
from builder.errors import ConfigError
from builder.graph.build import build_model
from builder.serve import checkpoint
from builder.settings import Setting
from builder.tokenizer import bpe_tokenizer, char_tokenizer

ort = pytest.importorskip("onnxruntime")
gguf = pytest.importorskip("gguf")

TEXT = "To be, or not to be: that is the question. Été"
LLAMA = ["experiment=llama_char", "model.n_layer=2", "model.d_model=32", "model.d_ff=48", "model.n_head=4"]
MODELS = {  # name: overrides, sizes checked (batch, each named dimension)
    "mlp": (["experiment=toy_classifier"], {}),
    "gpt": (["experiment=gpt_char", "model.n_layer=2", "model.d_model=32", "model.block_size=32"], {}),
    "llama-gqa-window-llama3-qknorm-bias": (LLAMA + [
        "model.kv_heads=2", "model.sliding_window=5", "model.qk_norm=true", "model.attn_bias=[q,k,v]",
        "+model.rope.type=llama3", "+model.rope.factor=4.0", "+model.rope.original_max_len=8"], {}),
    "llama-mqa-linear-tied": (LLAMA + ["model.kv_heads=1", "+model.rope.type=linear", "+model.rope.factor=2.0"], {}),
    "transformer": (["experiment=translate_numbers", "model.src_vocab_size=40", "model.tgt_vocab_size=45",
                     "model.n_encoder_layers=2", "model.n_decoder_layers=2", "model.d_model=32", "model.d_ff=64"], {}),
}


def saved(tmp_path, overrides, tokenizer=None):
    """A model built from `overrides` (the speed tricks on, as built for serving), saved as an export dir."""
    vocab = [f"model.vocab_size={tokenizer.vocab_size}"] if tokenizer is not None else []
    cfg = resolve(compose(overrides + vocab), "")
    torch.manual_seed(0)
    model = build_model(cfg["model"]).eval()
    for p in model.parameters():  # larger weights than the initialisation's: differences show
        p.data.normal_(0, 0.3) if p.dim() > 1 else p.data.uniform_(0.5, 1.5)
    tok = tokenizer.to_str() if tokenizer is not None else None
    return model, checkpoint.export(checkpoint.Loaded(model, cfg, tmp_path, tok), tmp_path / "ours")


@pytest.mark.parametrize("name", MODELS)
def test_onnxruntime_logits_equal_ours(name, tmp_path, capsys):
    overrides, _ = MODELS[name]
    tok = char_tokenizer(TEXT) if "mlp" not in name and "transformer" not in name else None
    model, ours = saved(tmp_path, overrides, tok)
    export([f"ckpt={ours}", "format=onnx", f"out={tmp_path / 'onnx'}"])
    assert "model.onnx" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == list(model.input_specs)
    for i in session.get_inputs():  # named dimensions are dynamic
        declared = model.input_specs[i.name]["shape"]
        assert [d if isinstance(s, str) else s for d, s in zip(i.shape, declared)] == declared
    import onnx
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}  # standard operators only (no oneDNN op)
    from builder.serve.onnx import example_inputs
    worst = 0.0
    one = {"batch": 1, "seq": 1, "src_len": 1, "tgt_len": 1}
    for sizes in ({"batch": 3, "seq": 13, "src_len": 11, "tgt_len": 9}, one):
        inputs = example_inputs(model, sizes, seed=1)
        if "src_pad" in inputs and sizes["src_len"] > 2:  # padding at the end of one source and one target
            inputs["src_pad"][0, -3:] = True
            inputs["tgt_pad"][0, -2:] = True
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
        with torch.no_grad():
            want = model(**inputs).numpy()
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst < 1e-4, f"{name}: max |logit difference| {worst:.2e}"


def read(path):
    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return fields, {t.name: t for t in reader.tensors}


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_gguf_tensors_and_metadata(family, tmp_path):
    from blocks.rope import inverse_frequencies
    from builder.serve.gguf import byte_symbols, export as gguf_export, permute
    tok = char_tokenizer(TEXT)
    if family == "gpt":
        overrides = MODELS["gpt"][0]
    else:
        overrides = LLAMA + ["model.kv_heads=2", "model.attn_bias=[q,k,v]", "+model.rope.type=llama3",
                             "+model.rope.factor=4.0", "+model.rope.original_max_len=8"]
    model, ours = saved(tmp_path, overrides, tok)
    loaded = checkpoint.load(ours)
    cfg = loaded.config["model"]
    for dtype in ("float32", "float16"):
        fields, tensors = read(gguf_export(loaded, tmp_path / dtype, dtype) / "model.gguf")
        arch = "gpt2" if family == "gpt" else "llama"
        assert fields["general.architecture"] == arch
        assert fields[f"{arch}.block_count"] == 2 and fields[f"{arch}.embedding_length"] == 32
        assert fields[f"{arch}.attention.head_count"] == 4 and fields[f"{arch}.context_length"] == cfg["block_size"]
        symbols = byte_symbols()
        chars = sorted(set(TEXT))
        assert fields["tokenizer.ggml.tokens"] == ["".join(symbols[b] for b in c.encode()) for c in chars]
        assert fields["tokenizer.ggml.merges"] == ["Ã ī", "Ã ©"]  # É and é: two bytes each
        state = {k.removeprefix("graph."): v for k, v in model.state_dict().items()}
        for name, t in tensors.items():
            assert (t.tensor_type.name == "F16") == (dtype == "float16" and len(t.shape) == 2), name
        if arch == "llama":
            assert fields["llama.attention.head_count_kv"] == 2 and fields["llama.rope.dimension_count"] == 8
            assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg["norm_eps"])
            factors = torch.from_numpy(np.array(tensors["rope_freqs.weight"].data))
            scaled = inverse_frequencies(8, **cfg["rope"])
            assert torch.allclose(inverse_frequencies(8, 10000.0) / factors, scaled, rtol=1e-6, atol=0)
            mapping = {"blk.1.attn_q.weight": permute(state["layers.1.attn.q.weight"], 4),
                       "blk.1.attn_k.bias": permute(state["layers.1.attn.k.bias"], 2),
                       "blk.0.ffn_gate.weight": state["layers.0.mlp.gate.weight"],
                       "output.weight": state["head.weight"], "output_norm.weight": state["norm.weight"]}
        else:
            assert fields["gpt2.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
            mapping = {"blk.1.attn_qkv.weight": state["layers.1.attn.qkv.weight"],
                       "blk.0.ffn_down.bias": state["layers.0.mlp.fc2.bias"],
                       "position_embd.weight": state["pos.weight"], "output.weight": state["tok.weight"]}
        mapping["token_embd.weight"] = state["tok.weight"]
        for name, want in mapping.items():
            got = torch.from_numpy(np.array(tensors[name].data, dtype=np.float32)).reshape(want.shape)
            tol = 0 if dtype == "float32" or want.dim() == 1 else 1e-3 * float(want.abs().max())
            assert (got - want).abs().max().item() <= tol, (dtype, name)
        # per layer: gpt2 6 weights and 6 biases, llama 9 weights and the q/k/v biases; then the embeddings,
        # output norm and output (gpt2: positions and the norm's bias; llama: rope_freqs)
        assert len(tensors) == 2 * 12 + (5 if arch == "gpt2" else 4)


def test_gguf_of_a_bpe_tokenizer_and_an_hf_directory(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    tok = bpe_tokenizer(["the cat sat on the mat, and the dog sat on the log. " * 50], vocab_size=300)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=tok.vocab_size + 3, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                  bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "hf")
    tok.save(tmp_path / "hf" / "tokenizer.json")
    export([f"ckpt={tmp_path / 'hf'}", "format=gguf", f"out={tmp_path / 'gguf'}"])
    assert "model.gguf" in capsys.readouterr().out
    fields, tensors = read(tmp_path / "gguf" / "model.gguf")
    vocab = json.loads(tok.to_str())["model"]
    assert fields["tokenizer.ggml.tokens"][:tok.vocab_size] == sorted(vocab["vocab"], key=vocab["vocab"].get)
    n = tok.vocab_size
    assert fields["tokenizer.ggml.tokens"][n:] == [f"[PAD{i}]" for i in range(n, n + 3)]  # the model's extra rows
    assert fields["tokenizer.ggml.merges"] == [" ".join(m) for m in vocab["merges"]]
    assert fields["tokenizer.ggml.eos_token_id"] == 0 and fields["tokenizer.ggml.token_type"][0] == 3  # control
    assert tensors["token_embd.weight"].shape.tolist() == [16, tok.vocab_size + 3]


@pytest.mark.parametrize("args, line", [
    (["format=gguf"], "format=gguf: the model is neither GPT-2 nor a Llama that llama.cpp runs (gpt2: "),
    (["format=hf"], "format=hf: the model is none of the Hugging Face families"),
    (["format=tflite"], "format: 'tflite' is not allowed; expected one of builder, hf, onnx, gguf"),
    (["format=onnx", "dtype=float16"], "dtype: float16 applies to format=gguf only"),
])
def test_a_format_that_does_not_fit_is_one_line(args, line, tmp_path):
    from builder.cli.export import _main
    _, ours = saved(tmp_path, MODELS["mlp"][0])
    with pytest.raises(ConfigError) as e:
        _main([f"ckpt={ours}", f"out={tmp_path / 'x'}", *args])
    assert len(e.value.problems) == 1 and line in e.value.problems[0]


def test_gguf_refuses_a_sliding_window_naming_it(tmp_path):
    from builder.serve.gguf import architecture
    cfg = resolve(compose(LLAMA + ["model.vocab_size=11", "model.sliding_window=4"]), "")
    with pytest.raises(ConfigError, match=r"llama: sliding_window=4 \(this family has sliding_window=null\)"):
        architecture(cfg["model"])


def test_the_command_arguments_are_typed_settings(capsys):
    assert all(isinstance(s, Setting) for s in SPEC.values())
    export(["--help"])
    out = capsys.readouterr().out
    assert "format='builder'  one of builder, hf, onnx, gguf" in out and "dtype='float32'" in out
