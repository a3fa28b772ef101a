"""GGUF export (builder-export format=gguf) for llama.cpp: GPT-2 and Llama-family models, float32 or float16.

A model whose graph is conf/model/gpt.yaml (the table conf/hf/gpt2.yaml reproduces it) goes out as llama.cpp's
`gpt2` architecture; one whose graph is conf/model/llama.yaml with multi-, grouped- or multi-query attention,
SwiGLU, optional q/k/v/output biases and default, linear or llama3 rotary scaling goes out as `llama`. Other
graphs and options (a sliding window, QK-norm, feed-forward biases, GeGLU) are refused in one line: llama.cpp's
architecture for them differs from ours.

llama.cpp's `llama` rotates adjacent pairs of a head's dimensions where ours (and Hugging Face's) rotate the
two halves, so the rows of q and k are permuted to match, as llama.cpp's own converter does; llama3 scaling is
the per-frequency `rope_freqs` tensor. The tokenizer goes in as llama.cpp's `gpt2` kind: a byte-level BPE as it
is; a character tokenizer as the byte-level spelling of each character, with merges that join the bytes of the
multi-byte ones (and one merge of two characters outside the alphabet when there are none, as the format
requires a list).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blocks.rope import inverse_frequencies
from builder.errors import ConfigError
from builder.serve.hf_table import Family

FILE = "model.gguf"
DTYPES = ("float32", "float16")
GPT2 = {"tok.weight": "token_embd.weight", "pos.weight": "position_embd.weight", "ln_f": "output_norm",
        "head.weight": "output.weight", "ln1": "attn_norm", "attn.qkv": "attn_qkv", "attn.proj": "attn_output",
        "ln2": "ffn_norm", "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down"}
LLAMA = {"tok.weight": "token_embd.weight", "norm": "output_norm", "head.weight": "output.weight",
         "ln1": "attn_norm", "attn.q": "attn_q", "attn.k": "attn_k", "attn.v": "attn_v", "attn.proj": "attn_output",
         "ln2": "ffn_norm", "mlp.gate": "ffn_gate", "mlp.up": "ffn_up", "mlp.down": "ffn_down"}


def architecture(model_cfg: dict[str, Any]) -> str:
    """"gpt2" or "llama", or a one-line ConfigError saying why the model has no GGUF form."""
    reasons = []
    for arch, family in (("gpt2", "gpt2"), ("llama", "llama"), ("llama", "qwen2")):
        reason = Family(family).fits(model_cfg)
        if reason is None:
            wrong = ([("activation", "gelu_tanh")] if arch == "gpt2" else
                     [("activation", "swiglu"), ("mlp_bias", False), ("sliding_window", None), ("qk_norm", False)])
            bad = next(((k, v) for k, v in wrong if model_cfg.get(k) != v), None)
            if bad is None:
                return arch
            reason = f"{bad[0]}={json.dumps(model_cfg.get(bad[0]))} (llama.cpp's {arch} has {json.dumps(bad[1])})"
        reasons.append(f"{family}: {reason}")
    raise ConfigError(f"format=gguf: the model is neither GPT-2 nor a Llama that llama.cpp runs ({'; '.join(reasons)})")


def byte_symbols() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as one printable character."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


def vocabulary(text: str, n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) of a tokenizer.json for llama.cpp's gpt2 tokenizer, padded to n_vocab."""
    import gguf  # optional dependency: only with format=gguf
    data = json.loads(text)
    model, pre = data["model"], data.get("pre_tokenizer") or {}
    vocab = dict(model.get("vocab") or {})
    if model["type"] == "BPE" and pre.get("type") == "ByteLevel":
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    elif model["type"] == "WordLevel" and all(len(t) == 1 for t in vocab):
        symbols = byte_symbols()
        vocab = {"".join(symbols[b] for b in t.encode()): i for t, i in vocab.items()}
        merges = [f"{t[:k]} {t[k]}" for t in vocab for k in range(1, len(t))]
        if not merges:
            outside = [c for c in symbols.values() if c not in vocab][:2]
            merges = [" ".join(outside)]
    else:
        raise ConfigError(f"format=gguf: the tokenizer ({model['type']}) has no llama.cpp form; byte-level BPE and "
                          "character tokenizers have")
    special = {t["id"] for t in data.get("added_tokens") or [] if t.get("special")}
    vocab.update({t["content"]: t["id"] for t in data.get("added_tokens") or []})
    if max(vocab.values(), default=-1) >= n_vocab:
        raise ConfigError(f"format=gguf: the tokenizer has ids up to {max(vocab.values())}, the model "
                          f"{n_vocab} rows")
    tokens, types = [f"[PAD{i}]" for i in range(n_vocab)], [gguf.TokenType.UNUSED] * n_vocab
    for token, i in vocab.items():
        tokens[i] = token
        types[i] = gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
    return tokens, [int(t) for t in types], merges


def permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of q or k (heads * hd, ...) from halves-rotated to pairs-rotated order (llama.cpp's converter's)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensors(model: Any, model_cfg: dict[str, Any], arch: str) -> dict[str, torch.Tensor]:
    """llama.cpp's tensor name -> tensor, from our state dict (a tied LM head written as output.weight too)."""
    names = GPT2 if arch == "gpt2" else LLAMA
    state = {k.removeprefix("graph."): v.detach().float() for k, v in model.state_dict().items()}
    out = {}
    heads, kv = int(model_cfg["n_head"]), int(model_cfg.get("kv_heads") or model_cfg["n_head"])
    for key, t in state.items():
        if key.startswith("layers."):
            _, i, rest = key.split(".", 2)
            part, kind = rest.rsplit(".", 1)
            if arch == "llama" and part in ("attn.q", "attn.k"):
                t = permute(t, heads if part == "attn.q" else kv)
            out[f"blk.{i}.{names[part]}.{kind}"] = t
        elif key in names:
            out[names[key]] = t
        else:
            part, kind = key.rsplit(".", 1)
            out[f"{names[part]}.{kind}"] = t
    rope = dict(model_cfg.get("rope") or {})
    if arch == "llama" and rope.get("type") == "llama3":
        hd = int(model_cfg.get("head_dim") or int(model_cfg["d_model"]) // heads)
        plain = inverse_frequencies(hd, float(rope.get("theta", 10000.0)))
        out["rope_freqs.weight"] = plain / inverse_frequencies(hd, **rope)  # each frequency is divided by it
    return out


def export(loaded: Any, out: str | Path, dtype: str = "float32") -> Path:
    """Write `loaded` (builder.serve.checkpoint.Loaded) as out/model.gguf."""
    try:
        import gguf  # optional dependency: only with format=gguf
    except ImportError:
        raise ConfigError("format=gguf: needs the gguf package (pip install gguf)") from None
    model_cfg = loaded.config["model"]
    arch = architecture(model_cfg)
    if loaded.tokenizer is None:
        raise ConfigError("format=gguf: the model has no tokenizer.json, which a GGUF file must hold")
    d, heads = int(model_cfg["d_model"]), int(model_cfg["n_head"])
    n_vocab = int(model_cfg["vocab_size"])
    tokens, types, merges = vocabulary(loaded.tokenizer, n_vocab)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(out / FILE), arch)
    w.add_name(Path(str(loaded.path)).name or "model")
    w.add_context_length(int(model_cfg["block_size"]))
    w.add_embedding_length(d)
    w.add_block_count(int(model_cfg["n_layer"]))
    w.add_head_count(heads)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "float16" else gguf.LlamaFileType.ALL_F32)
    if arch == "gpt2":
        w.add_feed_forward_length(4 * d)
        w.add_layer_norm_eps(1e-5)
    else:
        hd = int(model_cfg.get("head_dim") or d // heads)
        rope = dict(model_cfg.get("rope") or {})
        w.add_feed_forward_length(int(model_cfg["d_ff"]))
        w.add_head_count_kv(int(model_cfg.get("kv_heads") or heads))
        w.add_layer_norm_rms_eps(float(model_cfg["norm_eps"]))
        w.add_rope_dimension_count(hd)
        w.add_rope_freq_base(float(rope.get("theta", 10000.0)))
        w.add_vocab_size(n_vocab)
        if hd != d // heads:
            w.add_key_length(hd)
            w.add_value_length(hd)
        if rope.get("type") == "linear":
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(rope["factor"]))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    eos = next((i for i, t in enumerate(tokens) if t == "<|endoftext|>"), None)
    if eos is not None:
        w.add_bos_token_id(eos)
        w.add_eos_token_id(eos)
    w.add_add_bos_token(False)
    for name, t in tensors(loaded.model, model_cfg, arch).items():
        half = dtype == "float16" and t.dim() == 2
        w.add_tensor(name, t.numpy().astype(np.float16 if half else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
