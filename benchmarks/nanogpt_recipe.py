"""nanoGPT's Shakespeare-characters recipe for the CPU, written from its published settings (not its code): the
hand-written GPT of benchmarks/reference_gpt.py trained by a plain loop, as nanoGPT's train.py does with

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

i.e. nanoGPT's model.py as train.py configures it (no biases in linear and layer-norm layers, exact GELU),
AdamW (betas 0.9/0.99, weight decay 0.1 on matrices; torch's default loop over the parameters, as
nanoGPT asks for the fused kernel on CUDA only), lr 1e-3 with 100 warmup steps and cosine decay to
1e-4 at step 2000, gradient clipping at 1.0, random windows of the training split, and every 250 steps an
estimate of the train and val loss on 20 random batches each, with a checkpoint when val improves. The data is
the character-level 90/10 split of the text, as nanoGPT's prepare.py makes it (tokenized before the clock starts,
as nanoGPT's prepare.py runs before train.py).

    python benchmarks/nanogpt_recipe.py --data PATH --seed 0 --out DIR

Prints one JSON line: seconds (process start to the end of training), where they went (imports, setup,
training steps, evaluations, checkpoint saves, the rest: batches and the loop), the last estimated val loss, and
the val loss over the whole validation split (computed after the clock stops, for comparisons, and timed as
scoring_seconds, so that a caller timing the whole process can leave it off as it leaves off prepare_seconds).
"""
from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_gpt import GPT, GPTConfig  # noqa: E402

BLOCK, BATCH, LAYERS, HEADS, WIDTH = 64, 12, 4, 4, 128
STEPS, WARMUP, LR, MIN_LR, EVAL_EVERY, EVAL_ITERS = 2000, 100, 1e-3, 1e-4, 250, 20


def prepare(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    text = path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = np.array([index[c] for c in text], dtype=np.uint16)
    n = int(0.9 * len(ids))
    return ids[:n], ids[n:], len(chars)


def batch(data: np.ndarray, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(len(data) - BLOCK, (BATCH,), generator=g)
    x = torch.stack([torch.from_numpy(data[i:i + BLOCK].astype(np.int64)) for i in starts.tolist()])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + BLOCK].astype(np.int64)) for i in starts.tolist()])
    return x, y


def model_and_optimizer(vocab: int) -> tuple[GPT, torch.optim.AdamW]:
    """nanoGPT's model as its train.py configures it, and AdamW with weight decay on the matrices only."""
    model = GPT(GPTConfig(vocab_size=vocab, block_size=BLOCK, n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH,
                          dropout=0.0, bias=False, gelu="none"))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.99))
    return model, opt


def lr_at(step: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / (WARMUP + 1)
    progress = (step - WARMUP) / (STEPS - WARMUP)
    return MIN_LR + 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * (LR - MIN_LR)


@torch.no_grad()
def estimate(model: GPT, data: np.ndarray, g: torch.Generator) -> float:
    model.eval()
    losses = [F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
              for x, y in (batch(data, g) for _ in range(EVAL_ITERS))]
    model.train()
    return sum(losses) / len(losses)


@torch.no_grad()
def full_split(model: GPT, data: np.ndarray) -> float:
    """Every token of the split scored once, in consecutive windows (as builder's validation does)."""
    model.eval()
    total, count = 0.0, 0
    starts = list(range(0, len(data) - 1, BLOCK))
    for i in range(0, len(starts), 64):
        rows = [s for s in starts[i:i + 64] if s + 1 < len(data)]
        n = min(BLOCK, len(data) - 1 - rows[-1])
        x = torch.stack([torch.from_numpy(data[s:s + n].astype(np.int64)) for s in rows])
        y = torch.stack([torch.from_numpy(data[s + 1:s + 1 + n].astype(np.int64)) for s in rows])
        total += F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return total / count


def main() -> None:
    imported = time.perf_counter()
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    before = time.perf_counter()
    train, val, vocab = prepare(args.data)
    prepare_seconds = time.perf_counter() - before  # nanoGPT's prepare.py is a separate step: not on its clock
    torch.manual_seed(1337 + args.seed)
    g = torch.Generator().manual_seed(args.seed)
    model, opt = model_and_optimizer(vocab)
    best, val_loss = float("inf"), float("nan")
    args.out.mkdir(parents=True, exist_ok=True)
    spent = {"training steps": 0.0, "evaluations": 0.0, "checkpoint saves": 0.0}
    loop_start = time.perf_counter()
    for step in range(STEPS + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        if step % EVAL_EVERY == 0:
            t = time.perf_counter()
            estimate(model, train, g)
            val_loss = estimate(model, val, g)
            spent["evaluations"] += time.perf_counter() - t
            if step > 0 and val_loss < best:
                best = val_loss
                t = time.perf_counter()
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step},
                           args.out / "ckpt.pt")
                spent["checkpoint saves"] += time.perf_counter() - t
        if step == STEPS:
            break
        x, y = batch(train, g)
        t = time.perf_counter()
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        spent["training steps"] += time.perf_counter() - t
    end = time.perf_counter()
    seconds = end - START - prepare_seconds  # from process start, less the data preparation
    phases = {"imports": imported - START, "setup": loop_start - imported - prepare_seconds, **spent,
              "rest (batches, loop)": end - loop_start - sum(spent.values())}
    full = full_split(model, val)
    scoring_seconds = time.perf_counter() - end  # after the clock: a caller timing the process leaves it off
    print(json.dumps({"seconds": seconds, "prepare_seconds": prepare_seconds, "scoring_seconds": scoring_seconds,
                      "estimated_val_loss": val_loss, "val_loss": full, "phases": phases}))


if __name__ == "__main__":
    main()
