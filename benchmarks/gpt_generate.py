"""KV-cached greedy generation speed: the config-built GPT (builder.serve.generation) against transformers'
GPT2LMHeadModel.generate, with the same weights, batch 1, 6/6/384, block 256, a 32-token prompt, 200 new tokens.

    python benchmarks/gpt_generate.py [--rounds 7]

Interleaved rounds, medians. Also reports ours with aten's linear layers (builder/graph/cpu_linear.py off) and
without the cache, and whether all produced the same tokens.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from save_results import save

L, H, C, T, VOCAB, PROMPT, NEW = 6, 6, 384, 256, 65, 32, 200


def models():
    import transformers

    from builder.config import compose, resolve
    from builder.graph.build import build_model
    from builder.serve.hf_table import Family
    torch.manual_seed(0)
    cfg = compose(["model=gpt", f"model.vocab_size={VOCAB}", f"model.block_size={T}", f"model.n_layer={L}",
                   f"model.n_head={H}", f"model.d_model={C}"])
    ours = build_model(resolve(cfg.model, "model")).eval()
    with torch.no_grad():  # larger weights than GPT-2's init: clear argmaxes, so both models pick the same tokens
        for p in ours.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    hf_cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=T, n_embd=C, n_layer=L, n_head=H,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa",
                                     bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    hf.load_state_dict(Family("gpt2").weights_out(ours), strict=False)  # the causal-mask buffers are HF's own
    return ours, hf


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from builder.graph import cpu_linear
    from builder.serve.generation import decode, lm_step
    ours, hf = models()
    prompt = torch.randint(0, VOCAB, (1, PROMPT), generator=torch.Generator().manual_seed(0))

    def run_ours(cache: bool):
        return decode(lm_step(ours, use_cache=cache), prompt, max_new_tokens=NEW)

    def run_hf():
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW, min_new_tokens=NEW,
                           do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)

    def run_ours_aten():
        with cpu_linear.disabled():
            return run_ours(True)

    cases = {"ours": lambda: run_ours(True), "transformers": run_hf, "ours (aten linear)": run_ours_aten,
             "ours (no cache)": lambda: run_ours(False)}
    with torch.inference_mode():
        outputs = {k: f() for k, f in cases.items()}  # warm-up, and the tokens to compare
        times = {k: [] for k in cases}
        for r in range(args.rounds):
            order = list(cases)[r % len(cases):] + list(cases)[:r % len(cases)]  # rotated: no case always
            for k in order:                                                     # follows the same one
                start = time.perf_counter()
                cases[k]()
                times[k].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    same = all(torch.equal(outputs["ours"], out) for out in outputs.values())
    result = {"setup": f"{L}/{H}/{C}, block {T}, batch 1, prompt {PROMPT}, {NEW} new tokens, greedy",
              "seconds_median": med, "seconds_all": times, "tokens_per_s": {k: NEW / v for k, v in med.items()},
              "ours_vs_transformers": med["transformers"] / med["ours"], "same_tokens": same}
    lines = [f"# KV-cached greedy generation ({result['setup']}; median of {args.rounds})", "",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}", "",
             "| | seconds | tokens/s |", "|---|---|---|"]
    lines += [f"| {k} | {med[k]:.3f} | {NEW / med[k]:,.0f} |" for k in cases]
    per_round = sorted(h / o for h, o in zip(times["transformers"], times["ours"]))
    result["ours_vs_transformers_per_round"] = per_round
    lines += ["", f"ours vs transformers: {result['ours_vs_transformers']:.2f}x (target >= 1.5x); "
              f"same tokens from all: {same}",
              f"round by round (one machine state each): {per_round[0]:.2f}x to {per_round[-1]:.2f}x"]
    print("\n".join(lines))
    save("gpt_generate", result, lines)


if __name__ == "__main__":
    main()
