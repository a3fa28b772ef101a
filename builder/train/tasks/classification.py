"""Classification: the model maps inputs to class logits (B, C); batches are (inputs..., target) with
integer class targets (B,)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from builder.train.tasks.base import LOSSES, Task


def classification_loss(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if name == "cross_entropy":
        return F.cross_entropy(logits, target)
    # mse / l1 score the predicted distribution against the one-hot target
    probs = logits.softmax(-1)  # (B, C)
    onehot = F.one_hot(target, logits.shape[-1]).to(probs.dtype)  # (B, C)
    return LOSSES[name](probs, onehot)


class ClassificationTask(Task):
    name = "classification"
    monitor, mode = "val/acc", "max"
    metrics = ("acc",)

    def step(self, batch: Any) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        features, target = batch
        logits = self.run_model(features=features)  # (B, C)
        loss = classification_loss(self.loss_name, logits, target)
        acc = (logits.argmax(-1) == target).float().mean()
        return loss, target.shape[0], {"acc": acc}
