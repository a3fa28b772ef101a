"""Time to a configuration error, side by side with `import torch` (the floor for shape errors).

    python benchmarks/validation_speed.py [--repeats 5]

Structural errors (keys, blocks, arguments, edges, cycles) must print before torch is imported, in under
1 s; shape errors within about 1 s of what `python -c "import torch"` takes. Medians of N runs each.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAN = [sys.executable, "-m", "builder.cli.plan"]
CASES = {
    "import torch": [sys.executable, "-c", "import torch"],
    "edge typo (structural)": PLAN + ["model=transformer", "model.nodes.decoder.body.cross.kv=encodr"],
    "block typo (structural)": PLAN + ["model=gpt", "model.nodes.layers.body.ln1.block=layer_nrom"],
    "shape mismatch": PLAN + ["model=transformer", "model.nodes.decoder.body.ff.dim=256"],
}


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - start, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    last: dict[str, str] = {}
    for _ in range(args.repeats):  # interleaved, so a busy moment hits every case alike
        for name, cmd in CASES.items():
            seconds, last[name] = timed(cmd)
            times[name].append(seconds)
    medians = {name: statistics.median(t) for name, t in times.items()}
    torch_s = medians["import torch"]
    print(f"{'case':28} {'median s':>9} {'vs import torch':>16}  last line")
    for name, m in medians.items():
        print(f"{name:28} {m:9.3f} {m - torch_s:+15.3f}s  {last[name][:90]}")
    out = ROOT / "benchmarks" / "results" / "validation_speed.json"
    out.write_text(json.dumps({"medians_s": medians, "repeats": args.repeats, "last_lines": last}, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
