"""Masked language modelling (BERT): a fraction of the tokens is chosen, the model predicts them from the rest.

Of the chosen tokens (task.mask_rate, 15%) 80% are replaced by [MASK], 10% by a random token and 10% are left as
they are (task.mask_replace, task.random_replace); special tokens ([PAD], [CLS], [SEP], [MASK], ...) are never
chosen, nor drawn as random ones. The loss and `val/acc` are over the chosen tokens only. Validation draws the
same masks at every validation (a generator seeded by the batch index), so val/loss compares across steps.

Data: windows of token ids from `data=text`, whose tokenizer gets the task's `special_tokens` (conf/data/text.yaml
reads task.special_tokens). A window is framed as the tokenizer frames a text ("[CLS] ... [SEP]": its first and
last token are replaced), so the model sees what fill_mask and a classifier will give it. Optional roles:
`token_types` is fed zeros and `attention_mask` ones (text windows have no padding) when the model has them.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from builder.errors import ConfigError
from builder.train.data.special import special_ids
from builder.train.tasks.base import Task
from builder.train.tasks.tokenized import TokenizedTask

IGNORE = -100  # cross_entropy's ignore_index: tokens that were not chosen
VAL_SEED = 1234  # validation masks: this plus the batch index


def mask_tokens(x: torch.Tensor, special: torch.Tensor, regular: torch.Tensor, mask_id: int, rate: float,
                mask_replace: float = 0.8, random_replace: float = 0.1,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) for token ids x (B, T): each token that is not in `special` is chosen with probability
    `rate`; a chosen one becomes mask_id with probability mask_replace, a token drawn from `regular` with
    probability random_replace, else stays. labels (B, T) hold the chosen tokens' ids and IGNORE elsewhere."""
    draw = dict(generator=generator, device=x.device)
    chosen = (torch.rand(x.shape, **draw) < rate) & ~torch.isin(x, special)  # (B, T)
    labels = torch.where(chosen, x, IGNORE)
    roll = torch.rand(x.shape, **draw)  # (B, T): which replacement
    random = regular[torch.randint(len(regular), x.shape, **draw)]  # (B, T)
    inputs = torch.where(chosen & (roll < mask_replace), mask_id, x)
    inputs = torch.where(chosen & (roll >= mask_replace) & (roll < mask_replace + random_replace), random, inputs)
    return inputs, labels


class MaskedLMTask(TokenizedTask, Task):
    name = "masked_lm"
    monitor, mode = "val/loss", "min"
    unit = "tokens"
    metrics = ("acc",)

    def __init__(self, model: torch.nn.Module, cfg: dict[str, Any]):
        super().__init__(model, cfg)
        t = self.task_cfg
        self.rate = float(t.get("mask_rate", 0.15))
        self.mask_replace, self.random_replace = float(t.get("mask_replace", 0.8)), float(t.get("random_replace", 0.1))
        if self.mask_replace + self.random_replace > 1:
            raise ConfigError(f"task.random_replace: mask_replace + random_replace must be at most 1, got "
                              f"{self.mask_replace} + {self.random_replace}")
        self.mask_token = t.get("mask_token", "[MASK]")
        self.mask_id: int | None = None
        self.special = self.regular = None  # ids never chosen; ids a chosen token may be replaced by
        self.generator: torch.Generator | None = None  # validation's
        self.frame: tuple[int, int] | None = None  # (first, last) token of an encoded text: [CLS], [SEP]

    def setup(self, stage: str) -> None:
        tok = self.take_tokenizer(stage, "tokens", predicted=True)
        if tok is None or self.mask_id is not None:
            return
        self.mask_id = tok.tok.token_to_id(self.mask_token)
        if self.mask_id is None:
            raise ConfigError(f"task.mask_token: the tokenizer has no {self.mask_token} token; add it with "
                              f"task.special_tokens (data=text adds them to its tokenizer) or give a tokenizer "
                              f"that has it")
        framed = tok.tok.encode("", add_special_tokens=True).ids
        self.frame = (framed[0], framed[1]) if len(framed) == 2 else None
        special = special_ids(tok)
        self.special = torch.tensor(special, dtype=torch.long)
        self.regular = torch.tensor(sorted(set(range(tok.vocab_size)) - set(special)), dtype=torch.long)

    def context(self, batch: Any) -> int:
        return int(batch[0].shape[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.generator = torch.Generator(batch[0].device).manual_seed(VAL_SEED + batch_idx)
        super().validation_step(batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.generator = torch.Generator(batch[0].device).manual_seed(VAL_SEED + batch_idx)
        super().test_step(batch, batch_idx)

    def step(self, batch: Any) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        x = batch[0]  # (B, T) token ids; a text window's shifted targets (batch[1]) are not used
        if self.frame is not None:
            x = x.clone()
            x[:, 0], x[:, -1] = self.frame
        if self.special is None or self.special.device != x.device:
            if self.special is None:
                raise ConfigError("data: the masked_lm task needs a data source with a tokenizer (data=text)")
            self.special, self.regular = self.special.to(x.device), self.regular.to(x.device)
        inputs, labels = mask_tokens(x, self.special, self.regular, self.mask_id, self.rate, self.mask_replace,
                                     self.random_replace, None if self.training else self.generator)
        logits = self.run_model(tokens=inputs, token_types=torch.zeros_like(x), attention_mask=torch.ones_like(x))
        chosen = labels != IGNORE  # (B, T)
        count = chosen.sum().clamp(min=1)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE,
                               reduction="sum") / count
        acc = ((logits.argmax(-1) == labels) & chosen).sum() / count
        # training counts every token it read (no device sync); validation weights batches by the chosen tokens
        return loss, x.numel() if self.training else int(chosen.sum()), {"acc": acc}
