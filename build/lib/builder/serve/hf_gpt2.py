"""Hugging Face GPT-2 checkpoints as config-built models: conf/model/gpt.yaml with the HF sizes, weights renamed.

A local directory with config.json (model_type gpt2), model.safetensors and tokenizer.json loads wherever a
checkpoint does (`ckpt=DIR`). HF's Conv1D layers store weights as (in, out), the transpose of nn.Linear;
its fused c_attn holds q, k, v in that order, as our `qkv` does. The LM head is tied to the token embedding.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from builder.errors import ConfigError

ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu", "tanh": "tanh"}
# our name -> HF's, inside layer i; True: a Conv1D weight to transpose
LAYER = {
    "ln1.weight": ("ln_1.weight", False), "ln1.bias": ("ln_1.bias", False),
    "attn.qkv.weight": ("attn.c_attn.weight", True), "attn.qkv.bias": ("attn.c_attn.bias", False),
    "attn.proj.weight": ("attn.c_proj.weight", True), "attn.proj.bias": ("attn.c_proj.bias", False),
    "ln2.weight": ("ln_2.weight", False), "ln2.bias": ("ln_2.bias", False),
    "mlp.fc1.weight": ("mlp.c_fc.weight", True), "mlp.fc1.bias": ("mlp.c_fc.bias", False),
    "mlp.fc2.weight": ("mlp.c_proj.weight", True), "mlp.fc2.bias": ("mlp.c_proj.bias", False),
}


def is_gpt2_dir(path: str | Path) -> bool:
    cfg = Path(path).expanduser() / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "gpt2"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def model_config(hf: dict[str, Any], where: str = "config.json") -> dict[str, Any]:
    """Our GPT-2 model config (resolved) with the sizes of an HF GPT2Config; unsupported variants are errors."""
    from builder.config import compose, resolve
    problems = []
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        problems.append(f"{where}: activation_function '{act}' is not supported ({', '.join(ACTIVATIONS)})")
    n_embd = hf.get("n_embd", 768)
    checks = {"n_inner": (None, 4 * n_embd), "layer_norm_epsilon": (1e-5,), "scale_attn_weights": (True,),
              "scale_attn_by_inverse_layer_idx": (False,), "reorder_and_upcast_attn": (False,),
              "tie_word_embeddings": (True,)}
    for key, allowed in checks.items():
        if key in hf and hf[key] not in allowed:
            problems.append(f"{where}: {key}={hf[key]} is not supported (only {allowed[0]!r} matches conf/model/gpt.yaml)")
    if problems:
        raise ConfigError(problems)
    sizes = {"vocab_size": hf.get("vocab_size", 50257), "block_size": hf.get("n_positions", 1024),
             "n_layer": hf.get("n_layer", 12), "n_head": hf.get("n_head", 12), "d_model": n_embd}
    cfg = compose(["model=gpt", "data=text", "task=language_model"] + [f"model.{k}={v}" for k, v in sizes.items()]
                  + [f"model.activation={ACTIVATIONS[act]}", "model.dropout=0.0"])
    return resolve(cfg, "")


def from_hf(state: dict[str, Any], n_layer: int) -> dict[str, Any]:
    """GPT2LMHeadModel (or GPT2Model) tensors -> our state dict; raises on a missing tensor."""
    state = {k.removeprefix("transformer."): v for k, v in state.items()}
    missing = []

    def get(name: str, transpose: bool = False) -> Any:
        if name not in state:
            missing.append(name)
            return None
        return state[name].t().contiguous() if transpose else state[name]

    out = {"graph.tok.weight": get("wte.weight"), "graph.pos.weight": get("wpe.weight"),
           "graph.ln_f.weight": get("ln_f.weight"), "graph.ln_f.bias": get("ln_f.bias")}
    out["graph.head.weight"] = out["graph.tok.weight"]  # tied: the same tensor under both names
    for i in range(n_layer):
        for ours, (theirs, transpose) in LAYER.items():
            out[f"graph.layers.{i}.{ours}"] = get(f"h.{i}.{theirs}", transpose)
    if missing:
        raise ConfigError(f"model.safetensors: missing GPT-2 tensors: {', '.join(missing[:5])}"
                          + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return out


def to_hf(state: dict[str, Any], n_layer: int) -> dict[str, Any]:
    """Our state dict -> GPT2LMHeadModel's (for comparisons and export to transformers)."""
    out = {"transformer.wte.weight": state["graph.tok.weight"], "transformer.wpe.weight": state["graph.pos.weight"],
           "transformer.ln_f.weight": state["graph.ln_f.weight"], "transformer.ln_f.bias": state["graph.ln_f.bias"],
           "lm_head.weight": state["graph.head.weight"]}
    for i in range(n_layer):
        for ours, (theirs, transpose) in LAYER.items():
            t = state[f"graph.layers.{i}.{ours}"]
            out[f"transformer.h.{i}.{theirs}"] = t.t().contiguous() if transpose else t
    return out


def load_gpt2_dir(path: str | Path) -> tuple[Any, dict[str, Any], str | None]:
    """(model in eval mode, run config, tokenizer.json or None) from an HF GPT-2 directory."""
    from safetensors.torch import load_file

    from builder.graph.build import build_model
    path = Path(path).expanduser()
    hf = json.loads((path / "config.json").read_text())
    cfg = model_config(hf, where=str(path / "config.json"))
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"ckpt: {path} has no model.safetensors (only safetensors weights are read: they hold no code)")
    model = build_model(cfg["model"])
    model.load_state_dict(from_hf(load_file(str(weights)), cfg["model"]["n_layer"]), strict=True)
    tok = path / "tokenizer.json"
    return model.eval(), cfg, tok.read_text(encoding="utf-8") if tok.is_file() else None
