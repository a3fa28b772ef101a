"""Where a `builder-train` run's wall time goes, from process start to the end: imports, composing and checking
the config, data and model setup, training steps, validation passes (the sample after each included),
checkpoint saves, and the rest (Lightning's loop and hooks, logging). One run, in process, timed by a callback.

    python benchmarks/train_breakdown.py [overrides ...]      # default: experiment=gpt_shakespeare_char_cpu
    python benchmarks/train_breakdown.py --beside-recipe [--seed N]

--beside-recipe then runs nanoGPT's recipe (benchmarks/nanogpt_recipe.py, the other side of shakespeare.py) with
the same seed and prints both breakdowns side by side, phase by phase: where our time goes that the hand-written
loop does not spend. Written to benchmarks/results/train_breakdown.{json,md}.
"""
from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from lightning.pytorch.callbacks import Callback  # noqa: E402

from builder.config import compose  # noqa: E402
from builder.train.run import train  # noqa: E402

IMPORTED = time.perf_counter()


class Clock(Callback):
    def __init__(self):
        self.spent = {"training steps": 0.0, "validation (and any sample after it)": 0.0, "checkpoint saves": 0.0}
        self.fit_start = self.fit_end = None
        self._t = {}

    def _start(self, key):
        self._t[key] = time.perf_counter()

    def _stop(self, key, into):
        self.spent[into] += time.perf_counter() - self._t.pop(key)

    def setup(self, trainer, pl_module, stage):
        self.fit_start = time.perf_counter()
        save = trainer.save_checkpoint

        def timed_save(*args, **kwargs):
            self._start("save")
            try:
                return save(*args, **kwargs)
            finally:
                self._stop("save", "checkpoint saves")
        trainer.save_checkpoint = timed_save

    def on_train_batch_start(self, *args):
        self._start("step")

    def on_train_batch_end(self, *args):
        self._stop("step", "training steps")

    def on_validation_start(self, *args):
        self._start("val")

    def on_validation_end(self, *args):  # before the checkpoint callbacks' saves, which run at this hook too
        self._stop("val", "validation (and any sample after it)")

    def teardown(self, trainer, pl_module, stage):
        self.fit_end = time.perf_counter()


def recipe_phases(seed: int) -> dict[str, float]:
    """nanoGPT's recipe in a fresh process, timed as shakespeare.py times it: its phases and total."""
    from shakespeare import recipe
    with tempfile.TemporaryDirectory() as tmp:
        found = recipe(seed, Path(tmp))
    return {**found["phases"], "total": found["seconds"]}


def side_by_side(ours: dict[str, float], theirs: dict[str, float], seed: int) -> list[str]:
    """Ours and the recipe's phases in rows that mean the same on both sides."""
    rows = [("imports", ours["imports"], theirs["imports"]),
            ("setup: config, data, model, optimizer, Lightning", ours["compose"] + ours[
                "check, data, model, Lightning setup"], theirs["setup"]),
            ("training steps", ours["training steps"], theirs["training steps"]),
            ("validation / evaluations", ours["validation (and any sample after it)"], theirs["evaluations"]),
            ("checkpoint saves", ours["checkpoint saves"], theirs["checkpoint saves"]),
            ("the rest: loop, batches, hooks, logging, teardown", ours[
                "Lightning loop, hooks, logging (rest of fit)"] + ours["after fit (result, teardown)"],
             theirs["rest (batches, loop)"]),
            ("total, process start to end", ours["total"], theirs["total"])]
    lines = [f"# Where the time goes: builder-train beside nanoGPT's recipe (seed {seed})", "",
             "`python benchmarks/train_breakdown.py --beside-recipe`, one run each (ours first), this machine: "
             f"{os.cpu_count()} CPUs", "",
             "| phase | builder-train s | nanoGPT recipe s | difference s |", "|---|---|---|---|"]
    lines += [f"| {name} | {a:.1f} | {b:.1f} | {a - b:+.1f} |" for name, a, b in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--beside-recipe", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args, overrides = parser.parse_known_args()
    beside, seed = args.beside_recipe, args.seed
    overrides = overrides or ["experiment=gpt_shakespeare_char_cpu"]
    if beside:
        overrides = [*overrides, f"seed={seed}"]
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        args = [*overrides, f"run_dir={tmp}/run", "trainer.enable_progress_bar=false"]
        cfg = compose(args)
        composed = time.perf_counter()
        train(cfg, overrides=args, callbacks=(clock,))
    end = time.perf_counter()
    parts = {"imports": IMPORTED - START, "compose": composed - IMPORTED,
             "check, data, model, Lightning setup": clock.fit_start - composed, **clock.spent}
    parts["Lightning loop, hooks, logging (rest of fit)"] = (clock.fit_end - clock.fit_start) - sum(clock.spent.values())
    parts["after fit (result, teardown)"] = end - clock.fit_end
    total = end - START
    print(f"{' '.join(overrides)}: {total:.1f} s from process start")
    for key, value in parts.items():
        print(f"  {key:48s} {value:7.1f} s  {100 * value / total:5.1f}%")
    if beside:
        from save_results import save  # benchmarks/, this script's directory
        theirs = recipe_phases(seed)
        lines = side_by_side({**parts, "total": total}, theirs, seed)
        print("\n".join(lines))
        save("train_breakdown", {"seed": seed, "overrides": overrides, "builder": {**parts, "total": total},
                                 "nanogpt_recipe": theirs}, lines)


if __name__ == "__main__":
    main()
