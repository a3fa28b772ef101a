"""Training speed with attention inspection off is unchanged: the config-built GPT's training step timed
(1) as built, (2) after an inspection pass (capture switched on for one forward, then off again) and
(3) with capture left on, for contrast. Interleaved rounds, medians.

    python benchmarks/inspection_overhead.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpt_throughput import SIZES, VOCAB, tokens_per_s  # noqa: E402


def make_variant(mode: str):
    def make(L, H, C, T, B):
        from gpt_throughput import ours
        model, loss_fn = ours(L, H, C, T, B)
        attention = [m for m in model.modules() if hasattr(m, "capture")]
        if mode == "after_inspection":
            from builder.graph.attention import capture_attention
            capture_attention(model, lambda: model(torch.randint(0, VOCAB, (1, T))))
        if mode == "capture_on":
            for m in attention:
                m.capture = True
        return model, loss_fn
    return make


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", default="small", choices=list(SIZES))
    args = parser.parse_args()
    L, H, C, T, B, steps = SIZES[args.size]
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, VOCAB, (B, T), generator=gen), torch.randint(0, VOCAB, (B, T), generator=gen))
               for _ in range(steps + 2)]
    modes = ("as_built", "after_inspection", "capture_on")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            rates[mode].append(tokens_per_s(make_variant(mode), SIZES[args.size], batches))
    med = {m: statistics.median(r) for m, r in rates.items()}
    print(f"GPT {L}/{H}/{C}, block {T}, batch {B}: training tokens/s, median of {args.rounds} interleaved rounds")
    for m in modes:
        print(f"  {m:18} {med[m]:10,.0f}  {med[m] / med['as_built']:.3f}x")
    out = ROOT / "benchmarks" / "results" / "inspection_overhead.json"
    out.write_text(json.dumps({"size": args.size, "tokens_per_s": med, "rounds": args.rounds}, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
