"""Peak resident memory, ours beside transformers, GPT-2 124M (random weights, written once as a Hugging Face
directory): loading and greedy generation of 100 tokens, and training steps (batch 4, block 256, AdamW). Each
measurement is a fresh process (its peak RSS, VmHWM, imports included), the pairs run interleaved in one session.

    python benchmarks/memory.py [--steps 3] [--new 100]

Goal: ours at most 1.1x transformers' peak for each.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from save_results import save

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

CHILD = {
    "generate/ours": """
import builder
model = builder.load(HF)
model.generate("Hello", max_new_tokens=NEW, temperature=0, stop_at_eos=False)
""",
    "generate/transformers": """
import torch, transformers
model = transformers.AutoModelForCausalLM.from_pretrained(HF).eval()
with torch.inference_mode():
    model.generate(torch.tensor([[15496]]), max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
""",
    "train/ours": """
import torch
from builder.serve import checkpoint
model = checkpoint.load(HF).model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x = torch.randint(0, 50257, (4, 257))
for _ in range(STEPS):
    logits = model(idx=x[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
""",
    "train/transformers": """
import torch, transformers
model = transformers.AutoModelForCausalLM.from_pretrained(HF).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x = torch.randint(0, 50257, (4, 257))
for _ in range(STEPS):
    loss = model(input_ids=x[:, :-1], labels=x[:, :-1]).loss
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
""",
}
# VmHWM, the peak of this process image: ru_maxrss would also count the parent's memory at the fork before exec
PEAK = "\nimport re; print('PEAK', int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())[1]) * 1024)\n"


def peak(name: str, hf: Path, steps: int, new: int) -> float:
    code = f"HF, STEPS, NEW = {str(hf)!r}, {steps}, {new}\n" + CHILD[name] + PEAK
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return int(done.stdout.split("PEAK")[-1]) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--new", type=int, default=100)
    args = parser.parse_args()
    import torch
    import transformers
    with tempfile.TemporaryDirectory() as tmp:
        hf = Path(tmp) / "gpt2"
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(hf)
        from builder.tokenizer import bpe_tokenizer
        bpe_tokenizer(["Hello world. " * 100], 300).save(str(hf / "tokenizer.json"))
        result = {}
        for what in ("generate", "train"):
            for who in ("transformers", "ours"):
                result[f"{what}/{who}"] = peak(f"{what}/{who}", hf, args.steps, args.new)
                print(f"{what}/{who}: {result[f'{what}/{who}']:.2f} GB", flush=True)
    lines = ["# Peak resident memory, GPT-2 124M, ours beside transformers (same session)", "",
             "`python benchmarks/memory.py`", "", "| | transformers GB | ours GB | ratio (goal <= 1.1) |",
             "|---|---|---|---|"]
    for what in ("generate", "train"):
        ratio = result[f"{what}/ours"] / result[f"{what}/transformers"]
        result[f"{what}/ratio"] = ratio
        lines.append(f"| {what} | {result[f'{what}/transformers']:.2f} | {result[f'{what}/ours']:.2f} | {ratio:.2f} |")
    print("\n".join(lines))
    save("memory", {**result, "steps": args.steps, "new_tokens": args.new}, lines)


if __name__ == "__main__":
    main()
