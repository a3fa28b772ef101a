"""Training throughput (tokens/s) of the config-built GPT against a hand-written nanoGPT-style GPT
(benchmarks/reference_gpt.py) and transformers' GPT2LMHeadModel (sdpa), interleaved in one process.

    python benchmarks/gpt_throughput.py [--rounds 3] [--sizes small,medium]

Each step: forward, next-token cross-entropy, backward, gradient clipping at 1.0, AdamW step (the same
optimiser and parameter groups, from builder.train.optim, for all three). Ours runs through the language-model
task's `step` (what its Lightning training_step calls); `ours+lightning` times whole Trainer.fit steps;
`ours (aten linear)` is ours with the oneDNN linear path (builder/graph/cpu_linear.py) off.
Medians of the rounds; each round times every model once, so a busy moment hits them alike.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from reference_gpt import GPT, GPTConfig  # noqa: E402
from save_results import save  # noqa: E402

SIZES = {  # name: (n_layer, n_head, d_model, block_size, batch, timed steps)
    "small": (4, 4, 128, 64, 12, 100),
    "medium": (6, 6, 384, 256, 8, 5),
}
VOCAB = 65
OPTIM = {"optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "betas": [0.9, 0.99]},
         "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 0, "min_lr": 1e-4}


def run_config(L: int, H: int, C: int, T: int, B: int) -> dict:
    from builder.config import compose
    from builder.graph.prepare import prepare_model_config
    from omegaconf import OmegaConf
    cfg = compose(["experiment=gpt_char", f"model.n_layer={L}", f"model.n_head={H}", f"model.d_model={C}",
                   f"model.block_size={T}", f"data.batch_size={B}"])
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain["model"] = prepare_model_config(cfg, sizes={"vocab_size": VOCAB})
    return OmegaConf.to_container(OmegaConf.create(plain), resolve=True) | {"optim": OPTIM}


def ours(L, H, C, T, B):
    from builder.graph.build import build_model
    from builder.train.tasks.language_model import LanguageModelTask
    cfg = run_config(L, H, C, T, B)
    task = LanguageModelTask(build_model(cfg["model"]), cfg)
    return task.model, lambda x, y: task.step((x, y))[0]


def ours_aten(L, H, C, T, B):
    """Ours with every linear layer on aten's path (builder.graph.cpu_linear off): what the oneDNN path adds."""
    from builder.graph import cpu_linear
    model, loss = ours(L, H, C, T, B)

    def aten_loss(x, y):
        with cpu_linear.disabled():
            return loss(x, y)
    return model, aten_loss


def reference(L, H, C, T, B):
    model = GPT(GPTConfig(VOCAB, T, L, H, C))
    return model, lambda x, y: F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def hf(L, H, C, T, B):
    import transformers
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=T, n_embd=C, n_layer=L, n_head=H, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa",
                                  bos_token_id=None, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(cfg)
    return model, lambda x, y: F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten())


def tokens_per_s(make, size: tuple, batches: list) -> float:
    """Tokens/s over the timed steps, after two untimed warm-up steps."""
    from builder.train.optim import build_optimizer
    torch.manual_seed(0)
    model, loss_fn = make(*size[:5])
    model.train()
    opt, _ = build_optimizer(model, OPTIM, 10**6)
    for i, (x, y) in enumerate(batches):
        if i == 2:
            start = time.perf_counter()
        loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (len(batches) - 2) * batches[0][0].numel() / (time.perf_counter() - start)


def lightning_tokens_per_s(size: tuple, batches: list) -> float:
    """The task inside Trainer.fit (logging, clipping, schedule, hooks), timed from the third batch."""
    import lightning as L
    from torch.utils.data import DataLoader

    from builder.graph.build import build_model
    from builder.train.tasks.language_model import LanguageModelTask

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, i):
            if i == 2:
                self.start = time.perf_counter()

        def on_train_end(self, trainer, module):
            self.seconds = time.perf_counter() - self.start

    torch.manual_seed(0)
    cfg = run_config(*size[:5])
    cfg["task"]["sample_tokens"] = 0
    task = LanguageModelTask(build_model(cfg["model"]), cfg)
    clock = Clock()
    trainer = L.Trainer(max_steps=len(batches), logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=1.0, limit_val_batches=0, callbacks=[clock],
                        accelerator="cpu", log_every_n_steps=10)
    trainer.fit(task, DataLoader(batches, batch_size=None))
    return (len(batches) - 2) * batches[0][0].numel() / clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--sizes", default="small,medium")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import lightning.pytorch as lp
    import logging
    logging.getLogger(lp.__name__).setLevel(logging.ERROR)
    contenders = {"ours": ours, "ours (aten linear)": ours_aten, "reference": reference, "transformers": hf}
    results = {}
    for name in args.sizes.split(","):
        size = SIZES[name]
        L, H, C, T, B, steps = size
        g = torch.Generator().manual_seed(0)
        data = torch.randint(0, VOCAB, (steps + 2, B, T + 1), generator=g)
        batches = [(d[:, :-1], d[:, 1:]) for d in data]
        runs = {k: [] for k in [*contenders, "ours+lightning"]}
        for r in range(args.rounds):
            order = list(runs)[r % len(runs):] + list(runs)[:r % len(runs)]  # rotated: no one always goes first
            for key in order:
                runs[key].append(lightning_tokens_per_s(size, batches) if key == "ours+lightning"
                                 else tokens_per_s(contenders[key], size, batches))
            print(f"{name} round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in runs.items()), flush=True)
        med = {k: statistics.median(v) for k, v in runs.items()}
        results[name] = {"layers/heads/width": f"{L}/{H}/{C}", "block": T, "batch": B, "timed_steps": steps,
                         "tokens_per_s_median": med, "tokens_per_s_all": runs,
                         "ours_vs_reference": med["ours"] / med["reference"],
                         "ours_vs_transformers": med["ours"] / med["transformers"],
                         "ours_lightning_vs_reference": med["ours+lightning"] / med["reference"]}
    report(results, args.rounds)


def report(results: dict, rounds: int) -> None:
    lines = [f"# GPT training throughput (tokens/s, median of {rounds} interleaved rounds)", "",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}", "",
             "| size | ours | ours+lightning | ours (aten linear) | reference | transformers | ours/reference "
             "| ours/transformers |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        m = r["tokens_per_s_median"]
        lines.append(f"| {r['layers/heads/width']} block {r['block']} batch {r['batch']} | {m['ours']:,.0f} | "
                     f"{m['ours+lightning']:,.0f} | {m['ours (aten linear)']:,.0f} | {m['reference']:,.0f} | {m['transformers']:,.0f} | "
                     f"{r['ours_vs_reference']:.2f}x | {r['ours_vs_transformers']:.2f}x |")
    lines += ["", "Targets: ours >= 1.0x reference, >= 1.2x transformers."]
    print("\n".join(lines))
    print(f"written to {save('gpt_throughput', results, lines)} and .md")


if __name__ == "__main__":
    main()
