"""Shakespeare characters on a CPU, end to end, side by side: nanoGPT's recipe (benchmarks/nanogpt_recipe.py, a
plain loop written from nanoGPT's published CPU settings) and `builder-train experiment=gpt_shakespeare_char_cpu`,
interleaved seed by seed in one session, which goes first alternating.

    python benchmarks/shakespeare.py [--seeds 0,1,2] [--only builder] [extra builder-train overrides ...]

Each run is a fresh process timed from its start to its exit (imports, data, training, evaluations,
checkpoints; nanoGPT's data preparation, a separate script in nanoGPT, is left off its clock). Both are then
scored the same way after the clock stops: the final model's loss over the whole validation split (ours by
builder-eval in another process, the recipe's at the end of its own, that part left off its time). Goal: our
mean time at most 0.85x the recipe's at an equal or lower mean val loss. Where the time goes, phase by phase
beside the recipe's: benchmarks/train_breakdown.py --beside-recipe.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from save_results import save

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BUILDER_SHARED", ROOT.parent / "shared")) / "data" / "tinyshakespeare.txt"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def recipe(seed: int, root: Path) -> dict:
    seconds, out = timed([sys.executable, str(ROOT / "benchmarks" / "nanogpt_recipe.py"), "--data", str(DATA),
                          "--seed", str(seed), "--out", str(root / f"nanogpt{seed}")])
    found = json.loads(out.strip().splitlines()[-1])
    # the process's wall clock, less the two things its clock leaves off: nanoGPT's data preparation (a separate
    # script there) and the scoring of the whole validation split after training (ours runs in another process)
    return {"seed": seed, "seconds": seconds - found["prepare_seconds"] - found["scoring_seconds"],
            "val_loss": found["val_loss"], "phases": found["phases"]}


def ours(seed: int, extra: list[str], root: Path) -> dict:
    run_dir = root / f"builder{seed}"
    seconds, _ = timed([sys.executable, "-m", "builder.cli.train", "experiment=gpt_shakespeare_char_cpu",
                        f"seed={seed}", f"run_dir={run_dir}", "trainer.enable_progress_bar=false", *extra])
    _, out = timed([sys.executable, "-m", "builder.cli.eval", f"ckpt={run_dir}", "data.max_val_windows=null"])
    loss = next(float(line.split()[-1]) for line in out.splitlines() if line.strip().startswith("val/loss"))
    return {"seed": seed, "seconds": seconds, "val_loss": loss}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", choices=["builder", "nanogpt"], default=None)
    args, extra = parser.parse_known_args()
    rows: dict[str, list[dict]] = {"nanogpt": [], "builder": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(int(s) for s in args.seeds.split(",")):
            runs = {"nanogpt": lambda: recipe(seed, Path(tmp)), "builder": lambda: ours(seed, extra, Path(tmp))}
            # the order alternates seed by seed, so a machine that slows or speeds up over the session
            # weighs on both sides alike
            for who in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
                if args.only in (None, who):
                    rows[who].append(runs[who]())
                    print(who, rows[who][-1], flush=True)
    mean = {k: {"seconds": statistics.mean(r["seconds"] for r in v), "val_loss": statistics.mean(r["val_loss"] for r in v)}
            for k, v in rows.items() if v}
    result = {"runs": rows, "mean": mean, "overrides": extra, "cpus": os.cpu_count()}
    lines = ["# Shakespeare characters on a CPU, end to end, side by side", "",
             "`python benchmarks/shakespeare.py` " + " ".join(extra), "",
             "| seed | nanoGPT recipe s | nanoGPT val loss | builder s | builder val loss |", "|---|---|---|---|---|"]
    for i in range(max(len(v) for v in rows.values())):
        n = rows["nanogpt"][i] if i < len(rows["nanogpt"]) else {}
        b = rows["builder"][i] if i < len(rows["builder"]) else {}
        lines.append(f"| {(n or b)['seed']} | {n.get('seconds', float('nan')):.1f} | {n.get('val_loss', float('nan')):.4f} "
                     f"| {b.get('seconds', float('nan')):.1f} | {b.get('val_loss', float('nan')):.4f} |")
    if len(mean) == 2:
        ratio = mean["builder"]["seconds"] / mean["nanogpt"]["seconds"]
        result["time_ratio"] = ratio
        lines += [f"| mean | {mean['nanogpt']['seconds']:.1f} | {mean['nanogpt']['val_loss']:.4f} | "
                  f"{mean['builder']['seconds']:.1f} | {mean['builder']['val_loss']:.4f} |", "",
                  f"Time ratio builder / nanoGPT recipe: {ratio:.2f}x (goal <= 0.85x: "
                  f"{'met' if ratio <= 0.85 else 'missed'}); val loss over the whole validation split, "
                  f"{'equal or better' if mean['builder']['val_loss'] <= mean['nanogpt']['val_loss'] + 1e-3 else 'worse'}."]
    print("\n".join(lines))
    if len(mean) == 2:
        save("shakespeare", result, lines)


if __name__ == "__main__":
    main()
