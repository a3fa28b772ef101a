"""Greedy generation for a batch of prompts of different lengths: ours (one left-padded batch, the path of
`builder.load(...).generate([...])` and `builder-generate prompts_file=`) against transformers' batched
`generate` (left padding, attention mask) with the same weights, for the GPT-2 and Llama configs.

    python benchmarks/batched_generate.py [--rounds 5] [--batch 8] [--new 100] [--families gpt2,llama]
                                          [--sizes small,medium]

Sizes small 4/4/128 (Llama: d_ff 352) and medium 6/6/384 (Llama: d_ff 1024), Llama with 2 key/value heads,
block 256, prompts of 8 to 64 tokens, 100 new tokens.
Also times ours one prompt at a time, and checks that every row's tokens equal ours unbatched and transformers'
batched. Interleaved rounds (rotated order), medians; throughput counts generated tokens only.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from save_results import save

SIZES = {"small": (4, 4, 128, 352), "medium": (6, 6, 384, 1024)}  # n_layer, n_head, d_model, Llama's d_ff
KV, T, VOCAB = 2, 256, 65


def models(family: str, size: str = "medium"):
    import transformers

    from builder.config import compose, resolve
    from builder.graph.build import build_model
    from builder.serve.hf_table import Family
    L, H, C, FF = SIZES[size]
    torch.manual_seed(0)
    if family == "gpt2":
        cfg = compose(["model=gpt", f"model.vocab_size={VOCAB}", f"model.block_size={T}", f"model.n_layer={L}",
                       f"model.n_head={H}", f"model.d_model={C}"])
        theirs = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=VOCAB, n_positions=T, n_embd=C, n_layer=L, n_head=H, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, attn_implementation="sdpa", bos_token_id=None, eos_token_id=None))
    else:
        cfg = compose(["model=llama", f"model.vocab_size={VOCAB}", f"model.block_size={T}", f"model.n_layer={L}",
                       f"model.n_head={H}", f"model.kv_heads={KV}", f"model.d_model={C}", f"model.d_ff={FF}",
                       "model.norm_eps=1e-5"])
        theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=C, intermediate_size=FF, num_hidden_layers=L, num_attention_heads=H,
            num_key_value_heads=KV, max_position_embeddings=T, rms_norm_eps=1e-5, tie_word_embeddings=True,
            attn_implementation="sdpa", bos_token_id=None, eos_token_id=None, pad_token_id=None))
    theirs.eval()
    with torch.no_grad():  # larger weights than an init's: clear argmaxes, so all runs pick the same tokens
        for p in theirs.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    ours = build_model(resolve(cfg.model, "model")).eval()
    ours.load_state_dict(Family(family).weights_in(theirs.state_dict(), ours, "transformers"), strict=True)
    return ours, theirs


def case(family: str, size: str, batch: int, new: int, rounds: int) -> dict:
    from builder.serve.generation import decode, lm_step
    ours, theirs = models(family, size)
    g = torch.Generator().manual_seed(0)
    lengths = torch.linspace(8, 64, batch).round().int().tolist()
    prompts = [torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in lengths]
    width = max(lengths)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])  # (B, T0), left-padded
    padding = torch.tensor([[True] * (width - len(p)) + [False] * len(p) for p in prompts])
    step = lm_step(ours)

    def ours_batched():
        return decode(step, ids, max_new_tokens=new, padding=padding)[:, width:]

    def ours_one_by_one():
        return torch.stack([decode(step, torch.tensor([p]), max_new_tokens=new)[0, len(p):] for p in prompts])

    def hf_batched():
        return theirs.generate(ids, attention_mask=(~padding).long(), max_new_tokens=new, min_new_tokens=new,
                               do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)[:, width:]

    cases = {"ours, batched": ours_batched, "transformers, batched": hf_batched, "ours, one by one": ours_one_by_one}
    with torch.inference_mode():
        outputs = {k: f() for k, f in cases.items()}  # warm-up, and the tokens to compare
        times = {k: [] for k in cases}
        for r in range(rounds):
            for k in list(cases)[r % 3:] + list(cases)[:r % 3]:
                start = time.perf_counter()
                cases[k]()
                times[k].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = outputs["ours, batched"]
    L, H, C, FF = SIZES[size]
    shape = f"{L}/{H}/{C}" + (f"/{KV}/{FF}" if family == "llama" else "")
    return {"setup": f"{family} {shape}, batch {batch}, prompts of {lengths[0]}..{lengths[-1]} tokens, {new} new, greedy",
            "seconds_median": med, "seconds_all": times,
            "tokens_per_s": {k: batch * new / v for k, v in med.items()},
            "ours_vs_transformers": med["transformers, batched"] / med["ours, batched"],
            "batched_vs_one_by_one": med["ours, one by one"] / med["ours, batched"],
            "rows_equal_unbatched": [bool(torch.equal(a, b)) for a, b in zip(rows, outputs["ours, one by one"])],
            "rows_equal_transformers": [bool(torch.equal(a, b)) for a, b in zip(rows, outputs["transformers, batched"])]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new", type=int, default=100)
    parser.add_argument("--families", default="gpt2,llama")
    parser.add_argument("--sizes", default="small,medium")
    args = parser.parse_args()
    results = {f"{f} {s}": case(f, s, args.batch, args.new, args.rounds)
               for s in args.sizes.split(",") for f in args.families.split(",")}
    lines = [f"# Batched greedy generation, prompts of different lengths (median of {args.rounds})", "",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}", "",
             "| family | ours batched tok/s | transformers batched tok/s | ours one by one tok/s | ours vs transformers "
             "| rows = unbatched | rows = transformers |", "|---|---|---|---|---|---|---|"]
    for f, r in results.items():
        tps = r["tokens_per_s"]
        lines.append(f"| {f} | {tps['ours, batched']:,.0f} | {tps['transformers, batched']:,.0f} | "
                     f"{tps['ours, one by one']:,.0f} | {r['ours_vs_transformers']:.2f}x | "
                     f"{sum(r['rows_equal_unbatched'])}/{len(r['rows_equal_unbatched'])} | "
                     f"{sum(r['rows_equal_transformers'])}/{len(r['rows_equal_transformers'])} |")
    lines += ["", "Setups:"] + [f"- {r['setup']}" for r in results.values()] + ["", "target: ours >= 1.5x transformers"]
    print("\n".join(lines))
    save("batched_generate", results, lines)


if __name__ == "__main__":
    main()
