"""Parity figures: the largest absolute logit difference between transformers and our config-built model with
the same weights, for every family and variant the parity tests use (tests/test_gpt_parity.py,
tests/test_llama_parity.py, tests/test_bert.py: random small models, each loaded from its Hugging Face
directory), and the same after a round trip back out through builder-export format=hf.

    python benchmarks/parity.py
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from save_results import save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import test_bert as bert  # noqa: E402
import test_gpt_parity as gpt  # noqa: E402
import test_llama_parity as llama  # noqa: E402
import transformers  # noqa: E402

from builder.serve import checkpoint, hf  # noqa: E402


def compare(ref, run, again, tmp: Path) -> tuple[float, float]:
    """(max |ours - transformers|, max |transformers after the round trip - transformers|)."""
    ref.save_pretrained(tmp / "hf")
    loaded = checkpoint.load(tmp / "hf")
    back = type(ref).from_pretrained(hf.export(loaded, tmp / "back")) if again else None
    with torch.no_grad():
        expected = run(ref, None)
        ours = (run(None, loaded) - expected).abs().max().item()
        trip = (run(back.eval(), None) - expected).abs().max().item() if back is not None else float("nan")
    return ours, trip


def main() -> None:
    rows = []
    idx = torch.randint(0, 61, (3, 12), generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as tmp:
        for attn in ("eager", "sdpa"):
            ref = gpt.hf_gpt2(attn)
            x = torch.randint(0, gpt.SIZES["vocab_size"], (3, gpt.SIZES["n_positions"]))
            run = (lambda m, lo, x=x: m(x).logits if m is not None else lo.model(x))
            rows.append(("GPT2LMHeadModel", attn, *compare(ref, run, True, Path(tmp) / f"gpt2-{attn}")))
        for variant, (arch, config) in llama.VARIANTS.items():
            ref = llama.hf_model(arch, **config)
            run = (lambda m, lo: m(idx).logits if m is not None else lo.model(idx))
            rows.append((f"{arch}ForCausalLM", variant, *compare(ref, run, arch != "Phi3", Path(tmp) / variant)))
        for arch in bert.HEADS:
            for variant, (layers, types, padding) in bert.VARIANTS.items():
                ref = bert.hf_bert(arch, layers, **({"num_labels": 3} if "Sequence" in arch else {}))
                ids, mask, token_types = bert.batch(types, padding)

                def run(m, lo, ids=ids, mask=mask, token_types=token_types):
                    if m is not None:
                        return m(input_ids=ids, attention_mask=mask, token_type_ids=token_types).logits
                    return bert.ours_of(lo, ids, mask, token_types)
                rows.append((arch, variant, *compare(ref, run, True, Path(tmp) / f"{arch}-{variant}")))
    lines = [f"# Parity with transformers {transformers.__version__}: max |logit difference|, float32", "",
             "`python benchmarks/parity.py`", "", "| model | variant | ours vs transformers | "
             "round trip (ours -> HF) vs transformers |", "|---|---|---|---|"]
    lines += [f"| {a} | {v} | {d:.1e} | {t:.1e} |" for a, v, d, t in rows]
    print("\n".join(lines))
    save("parity", {"rows": [dict(zip(("model", "variant", "diff", "round_trip"), r)) for r in rows]}, lines)


if __name__ == "__main__":
    main()
