"""Shakespeare characters on a CPU: `builder-train experiment=gpt_shakespeare_char_cpu` for 3 seeds, against
nanoGPT's figures with the same settings on this 2-core machine (val loss 1.886, 143 s in all).

    python benchmarks/shakespeare.py [--seeds 0,1,2] [extra overrides ...]

Each run is a fresh process, timed from start to exit (imports, tokenizing, training, validations, the final
sample). The val loss is the last validation's, over the whole validation split. Targets: mean val loss <= 1.90,
mean time <= 1.1 x 143 s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from save_results import save

ROOT = Path(__file__).resolve().parent.parent
NANOGPT = {"val_loss": 1.886, "seconds": 143.0}


def run(seed: int, extra: list[str], root: Path) -> dict:
    from builder.train.metrics_csv import read_metrics
    run_dir = root / f"seed{seed}"
    cmd = [sys.executable, "-m", "builder.cli.train", "experiment=gpt_shakespeare_char_cpu", f"seed={seed}",
           f"run_dir={run_dir}", "trainer.enable_progress_bar=false", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"seed {seed} failed:\n{done.stderr[-3000:]}")
    val = [r["val/loss"] for r in read_metrics(run_dir / "metrics.csv") if "val/loss" in r]
    return {"seed": seed, "seconds": seconds, "final_val_loss": val[-1], "best_val_loss": min(val)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for seed in (int(s) for s in args.seeds.split(",")):
            runs.append(run(seed, extra, Path(tmp)))
            print(f"seed {seed}: val loss {runs[-1]['final_val_loss']:.4f}, {runs[-1]['seconds']:.1f} s", flush=True)
    loss = statistics.mean(r["final_val_loss"] for r in runs)
    seconds = statistics.mean(r["seconds"] for r in runs)
    result = {"runs": runs, "mean_val_loss": loss, "mean_seconds": seconds, "nanogpt": NANOGPT, "overrides": extra,
              "time_ratio_vs_nanogpt": seconds / NANOGPT["seconds"]}
    lines = ["# Shakespeare characters, CPU preset (gpt_shakespeare_char_cpu)", "",
             "| seed | val loss | seconds |", "|---|---|---|"]
    lines += [f"| {r['seed']} | {r['final_val_loss']:.4f} | {r['seconds']:.1f} |" for r in runs]
    lines += [f"| mean | {loss:.4f} | {seconds:.1f} |", "",
              f"nanoGPT, same settings and machine: val loss {NANOGPT['val_loss']}, {NANOGPT['seconds']:.0f} s. "
              f"Targets: val loss <= 1.90 ({'met' if loss <= 1.90 else 'missed'}), time <= "
              f"{1.1 * NANOGPT['seconds']:.0f} s ({'met' if seconds <= 1.1 * NANOGPT['seconds'] else 'missed'})."]
    print("\n".join(lines))
    save("shakespeare", result, lines)


if __name__ == "__main__":
    main()
