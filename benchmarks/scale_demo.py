"""Experiments at scale on one small machine, through the real command line (each step is one builder-train):

  1. a 4-trial Optuna search of the toy classifier (builder-train -m experiment=toy_classifier sweep=toy_optuna)
  2. a 2x2 grid of the small GPT (builder-train -m experiment=gpt_char model.n_layer=2,4 optim.lr=1e-3,3e-4)
  3. the small GPT on 2 CPU processes (DDP) under Hydra, against 1 process with the same global batch
  4. TensorBoard and offline W&B files of one run

    python benchmarks/scale_demo.py [--steps 300] [--out outputs/scale_demo]

Prints each sweep's summary table and writes benchmarks/results/scale_demo.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def builder_train(*args: str, env: dict | None = None) -> tuple[float, str]:
    """Run builder-train; (wall seconds, output). Stops the demo on failure, with the output's end."""
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "builder.cli.train", *args], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"builder-train {' '.join(args)} failed ({r.returncode}):\n{(r.stdout + r.stderr)[-4000:]}")
    return seconds, r.stdout + r.stderr


def summary_of(output: str) -> str:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("sweep summary"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("summary: "))
    return "\n".join(lines[start:end + 1])


def run_dirs() -> set[Path]:
    """Every directory under outputs/ that holds a run's files or Hydra's log."""
    return {p.parent for p in (ROOT / "outputs").rglob("*") if p.name in ("config.yaml", "train.log")}


def last_value(run_dir: Path, key: str) -> float:
    from builder.train.metrics_csv import read_metrics
    return [r[key] for r in read_metrics(run_dir / "metrics.csv") if key in r][-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps per small-GPT run")
    ap.add_argument("--out", default="outputs/scale_demo")
    args = ap.parse_args()
    out = ROOT / args.out / time.strftime("%Y-%m-%d_%H-%M-%S")
    steps, half = args.steps, args.steps // 2
    gpt = ["experiment=gpt_char", f"trainer.max_steps={steps}", f"trainer.val_check_interval={half}",
           "data.max_val_windows=200", "task.sample_tokens=100", *QUIET]
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                     "steps": steps}

    print("1. Optuna: 4 trials of the toy classifier", flush=True)
    t, text = builder_train("-m", "experiment=toy_classifier", "sweep=toy_optuna", f"hydra.sweep.dir={out}/optuna")
    results["optuna_toy"] = {"seconds": round(t, 1), "summary": summary_of(text)}
    print(summary_of(text), f"\n({t:.1f} s)\n", flush=True)

    print("2. Grid: small GPT, n_layer 2,4 x lr 1e-3,3e-4", flush=True)
    t, text = builder_train("-m", *gpt, "model.n_layer=2,4", "optim.lr=1e-3,3e-4", f"hydra.sweep.dir={out}/grid")
    results["grid_gpt"] = {"seconds": round(t, 1), "summary": summary_of(text)}
    print(summary_of(text), f"\n({t:.1f} s)\n", flush=True)

    print("3. DDP: small GPT on 2 CPU processes (batch 6 each) vs 1 process (batch 12)", flush=True)
    before = run_dirs()
    t2, text = builder_train(*gpt, "trainer=ddp", "trainer.devices=2", "data.batch_size=6", f"run_dir={out}/ddp")
    made = sorted(str(p.relative_to(ROOT)) for p in run_dirs() - before)  # by both processes and Hydra
    t1, _ = builder_train(*gpt, "data.batch_size=12", f"run_dir={out}/single")
    ddp = {"seconds_2_processes": round(t2, 1), "seconds_1_process": round(t1, 1),
           "val_loss_2_processes": last_value(out / "ddp", "val/loss"),
           "val_loss_1_process": last_value(out / "single", "val/loss"),
           "directories_made": made, "started_with_2_processes": "Starting with 2 processes" in text}
    results["ddp_gpt"] = ddp
    print(json.dumps(ddp, indent=2), "\n", flush=True)

    print("4. Dashboards: TensorBoard + W&B (offline without a login) for one toy run", flush=True)
    t, _ = builder_train("experiment=toy_classifier", "trainer.max_steps=50", "data.bayes_samples=0", *QUIET,
                         "logger=[tensorboard,wandb]", f"run_dir={out}/dashboards", env={"WANDB_SILENT": "true"})
    files = sorted(str(p.relative_to(out / "dashboards")) for p in (out / "dashboards").rglob("*")
                   if p.is_file() and ("tfevents" in p.name or p.suffix == ".wandb"))
    results["dashboards"] = {"seconds": round(t, 1), "files": files}
    print("\n".join(files), f"\n({t:.1f} s)", flush=True)

    dest = ROOT / "benchmarks" / "results"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "scale_demo.json").write_text(json.dumps(results, indent=2) + "\n")
    md = [f"# Experiments at scale ({results['machine']})", "",
          f"## Optuna, toy classifier ({results['optuna_toy']['seconds']} s)", "```",
          results["optuna_toy"]["summary"], "```", "",
          f"## Grid, small GPT, {steps} steps each ({results['grid_gpt']['seconds']} s)", "```",
          results["grid_gpt"]["summary"], "```", "", "## DDP, small GPT", "```", json.dumps(ddp, indent=2), "```",
          "", "## Dashboard files", "```", *files, "```", ""]
    (dest / "scale_demo.md").write_text("\n".join(md))
    print(f"\nwritten: {dest / 'scale_demo.json'}, {dest / 'scale_demo.md'}")


if __name__ == "__main__":
    main()
