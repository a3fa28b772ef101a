"""The Llama config (conf/model/llama.yaml) against transformers' LlamaForCausalLM (sdpa) with the same sizes:
training tokens/s, and KV-cached greedy decoding against transformers' generate, interleaved in one process.

    python benchmarks/llama_throughput.py [--rounds 3] [--sizes small,medium] [--decode-rounds 5] [--threads N]
                                          [--clock wall|cpu]

Training step: forward, next-token cross-entropy, backward, gradient clipping at 1.0, AdamW step (the same
optimiser and parameter groups, from builder.train.optim, for both); ours runs through the language-model task's
`step` (what its Lightning training_step calls). Decoding: batch 1 at each size, a 32-token prompt, 200 new
tokens, the same weights (mapped by conf/hf/llama.yaml), and whether both chose the same tokens.
Medians of the rounds; each round times every contender once, in rotated order.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from save_results import save  # noqa: E402

SIZES = {  # name: (n_layer, n_head, kv_heads, d_model, d_ff, block_size, batch, timed steps)
    "small": (4, 4, 2, 128, 352, 64, 12, 60),
    "medium": (6, 6, 2, 384, 1024, 256, 8, 10),
}
VOCAB, PROMPT, NEW = 65, 32, 200
CLOCK = time.perf_counter  # --clock cpu: time.process_time, this process's CPU seconds (steadier on a busy machine)
OPTIM = {"optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "betas": [0.9, 0.99]},
         "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 0, "min_lr": 1e-4}


def run_config(L: int, H: int, KV: int, C: int, FF: int, T: int, B: int) -> dict:
    from omegaconf import OmegaConf

    from builder.config import compose
    from builder.graph.prepare import prepare_model_config
    cfg = compose(["experiment=llama_char", f"model.n_layer={L}", f"model.n_head={H}", f"model.kv_heads={KV}",
                   f"model.d_model={C}", f"model.d_ff={FF}", f"model.block_size={T}", f"data.batch_size={B}"])
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain["model"] = prepare_model_config(cfg, sizes={"vocab_size": VOCAB})
    return OmegaConf.to_container(OmegaConf.create(plain), resolve=True) | {"optim": OPTIM}


def ours(*size):
    from builder.graph.build import build_model
    from builder.train.tasks.language_model import LanguageModelTask
    cfg = run_config(*size)
    task = LanguageModelTask(build_model(cfg["model"]), cfg)
    return task.model, lambda x, y: task.step((x, y))[0]


def hf_model(L, H, KV, C, FF, T, B=None):
    import transformers
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=C, intermediate_size=FF, num_hidden_layers=L,
                                   num_attention_heads=H, num_key_value_heads=KV, max_position_embeddings=T,
                                   rms_norm_eps=1e-5, tie_word_embeddings=True, attn_implementation="sdpa",
                                   bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return transformers.LlamaForCausalLM(cfg)


def hf(*size):
    model = hf_model(*size)
    return model, lambda x, y: F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten())


def tokens_per_s(make, size: tuple, batches: list) -> float:
    """Tokens/s over the timed steps, after two untimed warm-up steps."""
    from builder.train.optim import build_optimizer
    torch.manual_seed(0)
    model, loss_fn = make(*size[:7])
    model.train()
    opt, _ = build_optimizer(model, OPTIM, 10**6)
    for i, (x, y) in enumerate(batches):
        if i == 2:
            start = CLOCK()
        loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (len(batches) - 2) * batches[0][0].numel() / (CLOCK() - start)


def training(names: list[str], rounds: int) -> dict:
    contenders = {"ours": ours, "transformers": hf}
    results = {}
    for name in names:
        size = SIZES[name]
        L, H, KV, C, FF, T, B, steps = size
        data = torch.randint(0, VOCAB, (steps + 2, B, T + 1), generator=torch.Generator().manual_seed(0))
        batches = [(d[:, :-1], d[:, 1:]) for d in data]
        runs = {k: [] for k in contenders}
        for r in range(rounds):
            for key in list(runs)[r % 2:] + list(runs)[:r % 2]:
                runs[key].append(tokens_per_s(contenders[key], size, batches))
            print(f"{name} round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in runs.items()), flush=True)
        med = {k: statistics.median(v) for k, v in runs.items()}
        results[name] = {"layers/heads/kv_heads/width/ff": f"{L}/{H}/{KV}/{C}/{FF}", "block": T, "batch": B,
                         "timed_steps": steps, "tokens_per_s_median": med, "tokens_per_s_all": runs,
                         "ours_vs_transformers": med["ours"] / med["transformers"]}
    return results


def decoding(name: str, rounds: int) -> dict:
    from builder.graph.build import build_model
    from builder.serve.generation import decode, lm_step
    from builder.serve.hf_table import Family
    L, H, KV, C, FF, T, _, _ = SIZES[name]
    torch.manual_seed(0)
    theirs = hf_model(L, H, KV, C, FF, T).eval()
    with torch.no_grad():  # larger weights than the init: clear argmaxes, so both models pick the same tokens
        for p in theirs.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    mine = build_model(run_config(L, H, KV, C, FF, T, 1)["model"]).eval()
    mine.load_state_dict(Family("llama").weights_in(theirs.state_dict(), mine, "transformers"), strict=True)
    prompt = torch.randint(0, VOCAB, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    cases = {"ours": lambda: decode(lm_step(mine), prompt, max_new_tokens=NEW),
             "transformers": lambda: theirs.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                     max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                                                     use_cache=True, pad_token_id=0, eos_token_id=None)}
    with torch.inference_mode():
        outputs = {k: f() for k, f in cases.items()}  # warm-up, and the tokens to compare
        times = {k: [] for k in cases}
        for r in range(rounds):
            for k in list(cases)[r % 2:] + list(cases)[:r % 2]:
                start = CLOCK()
                cases[k]()
                times[k].append(CLOCK() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"setup": f"{L}/{H}/{KV}/{C}/{FF}, batch 1, prompt {PROMPT}, {NEW} new tokens, greedy",
            "seconds_median": med, "seconds_all": times, "tokens_per_s": {k: NEW / v for k, v in med.items()},
            "ours_vs_transformers": med["transformers"] / med["ours"],
            "same_tokens": torch.equal(outputs["ours"], outputs["transformers"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decode-rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--sizes", default="small,medium")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: CPU seconds of this process (with --threads 1, steadier when others share the machine)")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.sizes.split(",")
    result = {"training": training(names, args.rounds), "decoding": {n: decoding(n, args.decode_rounds) for n in names}}
    result["clock"] = args.clock
    title = (f"# Llama: training tokens/s (median of {args.rounds}) and KV-cached greedy decoding "
             f"(median of {args.decode_rounds}), ours against transformers' LlamaForCausalLM (sdpa)")
    machine = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
               f"{platform.processor() or platform.machine()}, {args.clock} clock")
    lines = [title, "", machine, "", "| training | ours | transformers | ours/transformers |", "|---|---|---|---|"]
    for r in result["training"].values():
        m = r["tokens_per_s_median"]
        lines.append(f"| {r['layers/heads/kv_heads/width/ff']} block {r['block']} batch {r['batch']} | "
                     f"{m['ours']:,.0f} | {m['transformers']:,.0f} | {r['ours_vs_transformers']:.2f}x |")
    lines += ["", "| decoding | ours (s) | transformers (s) | ours tokens/s | ours/transformers | same tokens |",
              "|---|---|---|---|---|---|"]
    for d in result["decoding"].values():
        m = d["seconds_median"]
        lines.append(f"| {d['setup']} | {m['ours']:.3f} | {m['transformers']:.3f} | {d['tokens_per_s']['ours']:,.0f} | "
                     f"{d['ours_vs_transformers']:.2f}x | {d['same_tokens']} |")
    lines += ["", "Targets: training ours >= 1.0x transformers; decoding >= 1.5x."]
    print("\n".join(lines))
    print(f"written to {save('llama_throughput', result, lines)} and .md")


if __name__ == "__main__":
    main()
