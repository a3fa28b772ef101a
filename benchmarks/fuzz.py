"""A longer fuzzing run than the test suite's: mutated shipped configs (large and non-finite numbers included)
and mutated command lines, each counted by how it ended: trained one step, refused in keyed lines, or a
failure (a traceback or a hang), which is printed with its mutation.

    python benchmarks/fuzz.py [--examples 300]

Writes benchmarks/results/fuzz.json and .md.
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=300, help="per experiment and per command")
    args = parser.parse_args()
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    from hypothesis import HealthCheck, given, settings, strategies as st
    from omegaconf import OmegaConf

    from builder.config import compose
    from fuzzing import mutated
    from save_results import save
    from test_fuzz import EXPERIMENTS, SPAWNING, TINY, outcome, time_limit

    work = Path(tempfile.mkdtemp(prefix="builder_fuzz_"))
    counts: dict[str, collections.Counter] = {}
    failures: list[str] = []
    start = time.perf_counter()
    for name, overrides in EXPERIMENTS.items():
        extra = [f"data.cache_dir={work / 'cache'}"] if name == "lm" else []
        base = OmegaConf.to_container(compose([*overrides, *TINY, *extra]), resolve=False)
        counts[name] = collections.Counter()

        @settings(max_examples=args.examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def run(data):
            cfg, story = data.draw(mutated(base, large=True).filter(
                lambda m: not m[1].split(" ", 1)[1].startswith(SPAWNING)))
            try:
                with time_limit(300):
                    counts[name][outcome(cfg, Path(tempfile.mkdtemp(dir=work)))] += 1
            except BaseException as e:  # noqa: BLE001 - a finding: recorded and printed, the run goes on
                counts[name]["failure"] += 1
                failures.append(f"{name}: {story}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                print(failures[-1], flush=True)
        run()
        print(f"{name}: {dict(counts[name])}", flush=True)
    seconds = time.perf_counter() - start
    rows = [[name, sum(c.values()), c["trained"], c["refused"] + c["refused at run time"], c["failure"]]
            for name, c in counts.items()]
    table = ["| experiment | mutations | trained one step | refused in keyed lines | failures |",
             "|---|---|---|---|---|"] + ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    text = "# Config fuzzing\n\n" + "\n".join(table) + f"\n\n{seconds:.0f} s\n" + \
        ("\nFailures:\n" + "\n".join(f"- {f}" for f in failures) + "\n" if failures else "")
    print(text)
    save("fuzz", {"rows": rows, "failures": failures, "seconds": seconds}, text.splitlines())


if __name__ == "__main__":
    main()
