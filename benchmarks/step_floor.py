"""One training step of the Shakespeare GPT (4/4/128, block 64, batch 12: benchmarks/shakespeare.py's model), the
recipe's and ours, and how much of it is arithmetic that any implementation of the model runs.

    python benchmarks/step_floor.py [--rounds 15] [--steps 10] [--profile-steps 40]

Side by side in one process, interleaved in chunks of --steps: nanoGPT's recipe step (benchmarks/nanogpt_recipe.py:
the hand-written model, torch's AdamW loop over the parameters) and ours (the language-model task's step and the
optimiser `builder-train experiment=gpt_shakespeare_char_cpu` builds, fused AdamW), each timed as forward,
backward and gradient clipping, then the optimiser update. Then each side's forward, backward and clipping is
profiled by kernel, in alternating chunks as well: matrix products (with the GFLOP/s they reach, beside a
2048x2048x2048 product's), attention (SDPA), GELU, layer norm, and the rest (copies, adds, the loss, autograd,
Python). The floor is the first four as ours runs them plus the fused update: a step with nothing else in it.

benchmarks/shakespeare.py's goal, our run at 0.85x the recipe's time, needs our steps at about 0.85x the
recipe's, since our time outside the steps is not below the recipe's (benchmarks/train_breakdown.py
--beside-recipe): the script prints that target beside the floor.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from nanogpt_recipe import BATCH, BLOCK, LAYERS, WIDTH, model_and_optimizer  # noqa: E402
from save_results import save  # noqa: E402

VOCAB = 65
KERNELS = {  # profiler names by group; all other self time is "the rest"
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "mkldnn::_linear_pointwise"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
    "GELU": ("aten::gelu", "aten::gelu_backward"),
    "layer norm": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
}


def recipe_side():
    model, opt = model_and_optimizer(VOCAB)
    return model, lambda x, y: F.cross_entropy(model(x).flatten(0, 1), y.flatten()), opt


def our_side():
    from omegaconf import OmegaConf

    from builder.config import compose
    from builder.graph.build import build_model
    from builder.graph.prepare import prepare_model_config
    from builder.train.optim import build_optimizer
    from builder.train.tasks.language_model import LanguageModelTask
    cfg = compose(["experiment=gpt_shakespeare_char_cpu"])
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain["model"] = prepare_model_config(cfg, sizes={"vocab_size": VOCAB})
    cfg = OmegaConf.to_container(OmegaConf.create(plain), resolve=True)
    task = LanguageModelTask(build_model(cfg["model"]), cfg)
    opt, _ = build_optimizer(task.model, cfg["optim"], cfg["trainer"]["max_steps"])
    return task.model, lambda x, y: task.step((x, y))[0], opt


def timed(side, batches) -> tuple[float, float]:
    """ms a step for forward + backward + clipping, and for the update (zero_grad included), over batches."""
    model, loss_fn, opt = side
    fwd_bwd = update = 0.0
    for x, y in batches:
        t0 = time.perf_counter()
        loss_fn(x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        t1 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        fwd_bwd, update = fwd_bwd + t1 - t0, update + time.perf_counter() - t1
    return fwd_bwd / len(batches) * 1e3, update / len(batches) * 1e3


def kernels(side, batches) -> dict[str, float]:
    """ms a step of each kernel group (self time) in forward, backward and clipping; the rest is everything else."""
    model, loss_fn, opt = side
    with profile() as prof:
        for x, y in batches:
            loss_fn(x, y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.zero_grad(set_to_none=True)
    spent = {group: 0.0 for group in [*KERNELS, "the rest"]}
    for event in prof.key_averages():
        group = next((g for g, names in KERNELS.items() if event.key in names), "the rest")
        spent[group] += event.self_cpu_time_total / 1e3 / len(batches)
    return spent


def gemm_flops_per_step() -> float:
    """FLOPs of the model's weight products in forward and backward (three products a weight, two FLOPs a
    multiply-add); attention's products run inside the SDPA kernel and count there."""
    per_layer = WIDTH * 3 * WIDTH + WIDTH * WIDTH + 2 * WIDTH * 4 * WIDTH  # qkv, projection, MLP in and out
    return 2 * 3 * BATCH * BLOCK * (LAYERS * per_layer + WIDTH * VOCAB)


def big_gemm_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(5):
        torch.mm(a, b)
    return 5 * 2 * 2048**3 / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10, help="steps a chunk; the sides alternate by chunk")
    parser.add_argument("--profile-steps", type=int, default=40, help="steps profiled a side, in chunks")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, VOCAB, (args.steps, BATCH, BLOCK + 1), generator=g)
    batches = [(d[:, :-1], d[:, 1:]) for d in data]
    torch.manual_seed(0)
    sides = {"nanoGPT recipe": recipe_side(), "ours": our_side()}
    for side in sides.values():
        timed(side, batches)  # warm-up
    runs = {name: [] for name in sides}
    for r in range(args.rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            runs[name].append(timed(sides[name], batches))
    step = {name: {"forward, backward, clipping": statistics.median(a for a, _ in v),
                   "update": statistics.median(b for _, b in v)} for name, v in runs.items()}
    for s in step.values():
        s["step"] = sum(s.values())
    by_kernel = {name: {} for name in sides}
    chunks = max(1, args.profile_steps // len(batches))
    for r in range(chunks):  # a chunk each in turn, as above
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            for group, ms in kernels(sides[name], batches).items():
                by_kernel[name][group] = by_kernel[name].get(group, 0.0) + ms / chunks
    gemm, big = gemm_flops_per_step(), big_gemm_gflops()
    ours = by_kernel["ours"]
    floor = sum(ours[k] for k in KERNELS) + step["ours"]["update"]
    target = 0.85 * step["nanoGPT recipe"]["step"]
    results = {"step_ms": step, "kernels_ms": by_kernel, "floor_ms": floor, "target_ms": target,
               "matrix_product_gflops": {n: gemm / k["matrix products"] / 1e6 for n, k in by_kernel.items()},
               "big_product_gflops": big, "threads": torch.get_num_threads(), "rounds": args.rounds}
    report(results)


def report(r: dict) -> None:
    names = list(r["step_ms"])
    lines = ["# One training step of the Shakespeare GPT (4/4/128, block 64, batch 12), ms",
             "", "`python benchmarks/step_floor.py`", "",
             f"torch {torch.__version__}, {r['threads']} threads; medians of {r['rounds']} interleaved rounds", "",
             "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in r["step_ms"][names[0]]:
        lines.append(f"| {key} | " + " | ".join(f"{r['step_ms'][n][key]:.1f}" for n in names) + " |")
    lines.append("| *the first row by kernel (profiled):* |" + " |" * len(names))
    for key in r["kernels_ms"][names[0]]:
        lines.append(f"| {key} | " + " | ".join(f"{r['kernels_ms'][n][key]:.1f}" for n in names) + " |")
    lines.append("| matrix products' GFLOP/s | " + " | ".join(
        f"{r['matrix_product_gflops'][n]:.0f}" for n in names) + " |")
    lines += ["", f"A 2048x2048x2048 product on this machine: {r['big_product_gflops']:.0f} GFLOP/s.",
              f"Floor (ours: matrix products, attention, GELU, layer norm, fused update): {r['floor_ms']:.1f} ms; "
              f"0.85x the recipe's step: {r['target_ms']:.1f} ms; ours: {r['step_ms']['ours']['step']:.1f} ms "
              f"({r['step_ms']['ours']['step'] / r['step_ms'][names[0]]['step']:.2f}x the recipe's)."]
    print("\n".join(lines))
    print(f"written to {save('step_floor', r, lines)} and .md")


if __name__ == "__main__":
    main()
