"""Model FLOPs utilisation: the FLOPs a training step needs, against what the device can do.

A step costs about 6 FLOPs per parameter per token (a multiply-add forward, two backward), plus 12 * context *
width per attention layer and token for the attention scores and their weighted sum (PaLM's accounting, as
nanoGPT's estimate_mfu). The device's peak comes from `trainer.peak_flops` or, for known GPUs under 16-bit
precision, from the table below (dense bf16 Tensor Core peaks). MFU is logged as train/mfu when a peak is known.
"""
from __future__ import annotations

from typing import Any

import torch

# dense bf16/fp16 Tensor Core FLOP/s, by a name that appears in torch.cuda.get_device_name()
PEAK_16BIT = {"H200": 989e12, "H100": 989e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12, "L40": 181e12,
              "L4": 121e12, "A10G": 70e12, "A10": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12}


def peak_flops(trainer_cfg: dict[str, Any], device: Any) -> float | None:
    """`trainer.peak_flops`, else the table's figure for this GPU under 16-bit precision, else None."""
    if trainer_cfg.get("peak_flops"):
        return float(trainer_cfg["peak_flops"])
    if getattr(device, "type", None) != "cuda" or "16" not in str(trainer_cfg.get("precision")):
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_16BIT.items() if key in name), None)


def flops_per_token(model: Any, context: int) -> float:
    """Training FLOPs per token (or per sample, for a model without attention) of `model` at `context`."""
    params = sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
    attention = sum(m.proj.in_features for m in model.modules() if hasattr(m, "capture") and hasattr(m, "proj"))
    return 6.0 * params + 12.0 * context * attention
