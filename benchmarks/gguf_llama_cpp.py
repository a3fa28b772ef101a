"""GGUF files from builder-export format=gguf, run by llama.cpp (llama-cpp-python): the greedy tokens for a prompt
against ours, and the first step's logits, for tiny GPT-2 and Llama-family models in float32 and float16.

    pip install llama-cpp-python          # builds llama.cpp from source (minutes)
    python benchmarks/gguf_llama_cpp.py [--new 24]

Without llama-cpp-python it says so and stops. Random weights drawn larger than an initialisation's, so each
greedy step has a clear winner and both runtimes pick the same token unless their arithmetic differs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from save_results import save

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
LLAMA = ["experiment=llama_char", "model.n_layer=2", "model.d_model=64", "model.d_ff=128", "model.n_head=4",
         "model.block_size=64"]
CASES = {
    "gpt2": ["experiment=gpt_char", "model.n_layer=2", "model.d_model=64", "model.n_head=4", "model.block_size=64"],
    "llama-gqa-tied": [*LLAMA, "model.kv_heads=2", "model.tie_embeddings=tok"],
    "llama-mqa-linear-rope": [*LLAMA, "model.kv_heads=1", "model.tie_embeddings=null", "+model.rope.type=linear",
                              "+model.rope.factor=2.0"],
    "llama-llama3-rope-qkv-bias": [*LLAMA, "model.kv_heads=2", "model.attn_bias=[q,k,v]", "+model.rope.type=llama3",
                                   "+model.rope.factor=4.0", "+model.rope.original_max_len=16"],
}


def model_for(overrides: list[str]):
    from builder.config import compose, resolve
    from builder.graph.build import build_model
    from builder.serve import checkpoint
    from builder.tokenizer import char_tokenizer
    tok = char_tokenizer(TEXT)
    cfg = resolve(compose([*overrides, f"model.vocab_size={tok.vocab_size}"]), "")
    torch.manual_seed(0)
    model = build_model(cfg["model"]).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return checkpoint.Loaded(model, cfg, Path("bench"), tok.to_str()), tok


def ours_greedy(model, prompt: list[int], new: int) -> tuple[list[int], np.ndarray]:
    from builder.serve.generation import decode, lm_step
    with torch.no_grad():
        first = model(torch.tensor([prompt]))[0, -1].numpy()
        out = decode(lm_step(model), torch.tensor([prompt]), max_new_tokens=new)
    return out[0, len(prompt):].tolist(), first


def llama_cpp_greedy(path: Path, prompt: list[int], new: int, n_ctx: int) -> tuple[list[int], np.ndarray]:
    from llama_cpp import Llama
    llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=2, verbose=False, logits_all=True)  # scores are kept only then
    llm.eval(prompt)
    first = np.array(llm.scores[llm.n_tokens - 1])
    tokens = []
    for _ in range(new):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        tokens.append(token)
        llm.eval([token])
    return tokens, first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new", type=int, default=24)
    args = parser.parse_args()
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed (pip install llama-cpp-python builds llama.cpp from source); "
              "nothing to compare")
        return
    from builder.serve import gguf
    rows, lines = [], [f"llama-cpp-python {llama_cpp.__version__}; prompt of 16 characters, {args.new} new tokens",
                       "", "| model | weights | same greedy tokens | first step max abs logit difference |",
                       "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in CASES.items():
            loaded, tok = model_for(overrides)
            prompt = tok.encode(TEXT[:16])
            want, want_first = ours_greedy(loaded.model, prompt, args.new)
            for dtype in ("float32", "float16"):
                path = gguf.export(loaded, Path(tmp) / f"{name}-{dtype}", dtype) / gguf.FILE
                got, got_first = llama_cpp_greedy(path, prompt, args.new, int(loaded.config["model"]["block_size"]))
                diff = float(np.abs(got_first - want_first).max())
                rows.append({"model": name, "dtype": dtype, "same": got == want, "first_logits_max_abs": diff,
                             "ours": want, "llama_cpp": got})
                lines.append(f"| {name} | {dtype} | {'yes' if got == want else 'NO'} | {diff:.2e} |")
                print(lines[-1], flush=True)
    save("gguf_llama_cpp", {"rows": rows}, lines)
    if not all(r["same"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
