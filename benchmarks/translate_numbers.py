"""Benchmark: `builder-train experiment=translate_numbers` per seed, then greedy exact match on the test split.

    python benchmarks/translate_numbers.py                      # seeds 0 1 2
    python benchmarks/translate_numbers.py --seeds 0 -- trainer.max_steps=1000

Target: >= 98% test exact match for every seed, each run (training + test) within 15 minutes on a
2-core CPU. Each seed trains in its own process (as a user would run it); the test split (1,000 numbers,
fixed by data.seed, disjoint from training) is translated with the best checkpoint (chosen on
val/exact_match). Results go to benchmarks/results/translate_numbers.{json,md} (with each seed's
metrics.csv); the runs themselves (checkpoints, logs, test_errors.tsv) to outputs/benchmarks/translate_numbers/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "outputs" / "benchmarks" / "translate_numbers"
TARGET, LIMIT_S = 0.98, 15 * 60


def train(seed: int, run_dir: Path, extra: list[str]) -> float:
    """Train one seed in a fresh process; returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "builder.cli.train", "experiment=translate_numbers", f"seed={seed}",
           f"run_dir={run_dir}", "trainer.enable_progress_bar=false", *extra]
    print("$", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    with open(run_dir / "train.log", "w") as log:
        done = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"training failed (exit {done.returncode}); see {run_dir / 'train.log'}")
    return time.perf_counter() - start


def test(run_dir: Path) -> dict[str, float]:
    """Greedy translations of the test split with the best checkpoint: exact match, chrF, BLEU."""
    from builder.serve.checkpoint import load
    from builder.train.data.numbers import NumbersData
    from builder.train.tasks.seq2seq import text_metrics
    from builder.serve.translation import Translator
    model = Translator(load(run_dir))
    sources, refs = zip(*NumbersData(model.config["data"]).read_pairs()["test"])  # fixed by data.seed
    start = time.perf_counter()
    hyps = model.translate(list(sources), batch_size=500)
    seconds = time.perf_counter() - start
    misses = [(s, h, r) for s, h, r in zip(sources, hyps, refs) if h != r]
    (run_dir / "test_errors.tsv").write_text("".join(f"{s}\t{h}\t{r}\n" for s, h, r in misses), encoding="utf-8")
    return {**text_metrics(hyps, list(refs)), "test_seconds": seconds, "n_test": len(refs),
            "by_digits": by_digits(model)}


def by_digits(model, per_length: int = 300) -> dict[int, float]:
    """Exact match per digit count (the uniform test set is 90% six-digit numbers). Short numbers are all
    training numbers, so this checks that they are learnt, not that they generalise."""
    import random

    from builder.train.data.numbers import english, german
    rng, out = random.Random(1234), {}
    for d in range(1, 7):
        lo, hi = (0 if d == 1 else 10 ** (d - 1)), 10 ** d
        nums = list(range(lo, hi)) if hi - lo <= per_length else rng.sample(range(lo, hi), per_length)
        hyps = model.translate([english(n) for n in nums], batch_size=500)
        out[d] = round(sum(h == german(n) for h, n in zip(hyps, nums)) / len(nums), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("overrides", nargs="*", help="extra builder-train overrides (after --)")
    args = parser.parse_args()
    rows = []
    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        run_dir = RUNS / f"seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        train_s = train(seed, run_dir, args.overrides)
        metrics = test(run_dir)
        shutil.copy(run_dir / "metrics.csv", RESULTS / f"translate_numbers_seed{seed}_metrics.csv")
        total = train_s + metrics["test_seconds"]
        rows.append({"seed": seed, "train_seconds": round(train_s, 1), "total_seconds": round(total, 1),
                     **{k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
                     "passed": metrics["exact_match"] >= TARGET and total <= LIMIT_S})
        print(json.dumps(rows[-1]), flush=True)
    report = {"benchmark": "translate_numbers", "target_exact_match": TARGET, "limit_seconds": LIMIT_S,
              "overrides": args.overrides, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "torch": torch.__version__, "runs": rows}
    (RESULTS / "translate_numbers.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| seed | test exact match | chrF | BLEU (char) | train + test wall time | passed | "
             "exact match by digits 1..6 |", "|---:|---:|---:|---:|---:|:---:|:---|"]
    lines += [f"| {r['seed']} | {100 * r['exact_match']:.1f}% | {r['chrf']:.2f} | {r['bleu']:.2f} | "
              f"{r['total_seconds'] / 60:.1f} min | {'yes' if r['passed'] else 'no'} | "
              f"{' '.join(f'{100 * v:.1f}' for v in r['by_digits'].values())} |" for r in rows]
    (RESULTS / "translate_numbers.md").write_text(
        f"# translate_numbers\n\nTarget: >= {100 * TARGET:.0f}% test exact match, <= {LIMIT_S // 60} min per run "
        f"({report['machine']}, torch {torch.__version__}).\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(0 if all(r["passed"] for r in rows) else 1)


if __name__ == "__main__":
    main()
