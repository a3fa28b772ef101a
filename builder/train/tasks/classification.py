"""Classification: the model maps inputs to class logits (B, C); batches are (inputs..., target) with
integer class targets (B,).

Batches of feature rows are (features, target). Batches of token ids (data=text_classes) are (ids, attention_mask,
target): the ids go to the `features` role and, when the model has such inputs, the mask (1 at tokens, 0 at
padding) to the optional `attention_mask` role and zeros to the optional `token_types` role. The data's tokenizer,
if it has one, is checked against the model, saved beside the run and in every checkpoint (predict(texts)).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from builder.train.tasks.base import LOSSES, Task
from builder.train.tasks.tokenized import TokenizedTask


def classification_loss(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if name == "cross_entropy":
        return F.cross_entropy(logits, target)
    # mse / l1 score the predicted distribution against the one-hot target
    probs = logits.softmax(-1)  # (B, C)
    onehot = F.one_hot(target, logits.shape[-1]).to(probs.dtype)  # (B, C)
    return LOSSES[name](probs, onehot)


class ClassificationTask(TokenizedTask, Task):
    name = "classification"
    monitor, mode = "val/acc", "max"
    metrics = ("acc",)

    def setup(self, stage: str) -> None:
        self.take_tokenizer(stage, "features", predicted=False)

    def context(self, batch: Any) -> int:
        return int(batch[0].shape[1]) if len(batch) == 3 else 0  # token ids: their length; feature rows: none

    def step(self, batch: Any) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        features, *mask, target = batch  # (B, ...), [(B, T) attention mask], (B,)
        optional = {}
        if mask:
            optional["attention_mask"] = mask[0]
        if "token_types" in self.roles.inputs:
            optional["token_types"] = torch.zeros_like(features)
        logits = self.run_model(features=features, **optional)  # (B, C)
        loss = classification_loss(self.loss_name, logits, target)
        acc = (logits.argmax(-1) == target).float().mean()
        return loss, target.shape[0], {"acc": acc}
