"""Cost as work grows: training tokens/s and peak resident memory of the config-built GPT beside transformers'
GPT2LMHeadModel (sdpa attention), against context length and against model size, drawn as PNGs.

    python benchmarks/scaling.py [--contexts 128,256,512,1024,2048] [--steps 3]

Each point is a fresh process per implementation (its peak RSS, VmHWM, is the point's memory; imports included, the
same for both sides' torch), timing `--steps` AdamW steps after one warm-up step. Contexts run the 6/6/384 GPT
at batch 1; sizes run 4/4/128, 6/6/384 and GPT-2 small (12/12/768) at context 256, batch 4. Writes
benchmarks/results/scaling.{json,md} and scaling_context.png, scaling_size.png.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from save_results import RESULTS, save

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
SIZES = {"4/4/128": (4, 4, 128), "6/6/384": (6, 6, 384), "12/12/768": (12, 12, 768)}
VOCAB = 50257

CHILD = """
import json, re, time, torch
torch.manual_seed(0)
L, H, C, T, B, STEPS, WHO = {L}, {H}, {C}, {T}, {B}, {STEPS}, {WHO!r}
if WHO == "ours":
    from builder.config import compose, resolve
    from builder.graph.build import build_model
    cfg = resolve(compose(["experiment=gpt2_small", f"model.n_layer={{L}}", f"model.n_head={{H}}", f"model.d_model={{C}}",
                           f"model.block_size={{T}}", "model.dropout=0.0", "model.vocab_size={VOCAB}"]), "")
    model = build_model(cfg["model"]).train()
    loss_of = lambda x: torch.nn.functional.cross_entropy(model(idx=x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
else:
    import transformers
    model = transformers.GPT2LMHeadModel._from_config(transformers.GPT2Config(
        n_layer=L, n_head=H, n_embd=C, n_positions=T, vocab_size={VOCAB}, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0), attn_implementation="sdpa").train()
    loss_of = lambda x: model(input_ids=x[:, :-1], labels=x[:, :-1]).loss
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x = torch.randint(0, {VOCAB}, (B, T + 1))
for i in range(STEPS + 1):
    if i == 1:
        start = time.perf_counter()
    loss_of(x).backward(); opt.step(); opt.zero_grad(set_to_none=True)
seconds = time.perf_counter() - start
print(json.dumps({{"tokens_per_s": STEPS * B * T / seconds,
                   "peak_gb": int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())[1]) * 1024 / 1e9}}))
"""


def point(who: str, size: str, T: int, B: int, steps: int) -> dict:
    L, H, C = SIZES[size]
    code = CHILD.format(L=L, H=H, C=C, T=T, B=B, STEPS=steps, WHO=who, VOCAB=VOCAB)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{who} {size} T={T} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def draw(rows: list[dict], x: str, title: str, file: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(10, 4))
    for who, style in (("ours", "o-"), ("transformers", "s--")):
        mine = [r for r in rows if r["who"] == who]
        xs = list(range(len(mine)))
        speed.plot(xs, [r["tokens_per_s"] for r in mine], style, label=who)
        memory.plot(xs, [r["peak_gb"] for r in mine], style, label=who)
        for axis in (speed, memory):
            axis.set_xticks(xs, [str(r[x]) for r in mine])
    speed.set(title=f"training tokens/s by {x}", xlabel=x, ylabel="tokens/s")
    memory.set(title=f"peak resident memory by {x}", xlabel=x, ylabel="GB")
    for axis in (speed, memory):
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(file, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contexts", default="128,256,512,1024,2048")
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for T in (int(t) for t in args.contexts.split(",")):
        for who in ("ours", "transformers"):
            rows.append({"sweep": "context", "who": who, "size": "6/6/384", "context": T, "batch": 1,
                         **point(who, "6/6/384", T, 1, args.steps)})
            print(rows[-1], flush=True)
    for size in args.sizes.split(","):
        for who in ("ours", "transformers"):
            rows.append({"sweep": "size", "who": who, "size": size, "context": 256, "batch": 4,
                         **point(who, size, 256, 4, args.steps)})
            print(rows[-1], flush=True)
    lines = ["# Training cost as context and model size grow, ours beside transformers (same session)", "",
             "`python benchmarks/scaling.py`", "",
             "| sweep | size | context | batch | ours tokens/s | transformers tokens/s | speed ratio | ours GB | "
             "transformers GB | memory ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
    for sweep in ("context", "size"):
        ours = [r for r in rows if r["sweep"] == sweep and r["who"] == "ours"]
        theirs = [r for r in rows if r["sweep"] == sweep and r["who"] == "transformers"]
        for a, b in zip(ours, theirs):
            lines.append(f"| {sweep} | {a['size']} | {a['context']} | {a['batch']} | {a['tokens_per_s']:,.0f} | "
                         f"{b['tokens_per_s']:,.0f} | {a['tokens_per_s'] / b['tokens_per_s']:.2f}x | "
                         f"{a['peak_gb']:.2f} | {b['peak_gb']:.2f} | {a['peak_gb'] / b['peak_gb']:.2f}x |")
    print("\n".join(lines))
    save("scaling", {"rows": rows, "steps": args.steps}, lines)
    draw([r for r in rows if r["sweep"] == "context"], "context", "GPT 6/6/384, batch 1",
         RESULTS / "scaling_context.png")
    draw([r for r in rows if r["sweep"] == "size"], "size", "context 256, batch 4", RESULTS / "scaling_size.png")


if __name__ == "__main__":
    main()
