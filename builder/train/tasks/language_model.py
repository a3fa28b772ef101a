"""Causal language modelling: next-token cross-entropy at every position of (x, y) windows, y = x shifted by one.

Validation scores every token of the validation split once (see builder/train/data/text.py); `val/loss` is the
mean over tokens, `val/bpc` (bits per character) is logged for character-level tokenizers. After each
validation (or, with `task.sample_after: training`, once after the last step) a short sample is generated,
appended to samples.txt in the run directory, handed to loggers that take text, and the last one is printed
when training ends. The tokenizer travels inside every checkpoint.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from builder.serve.generation import decode, lm_step
from builder.train.distributed import rank_zero_model
from builder.train.tasks.base import Task, check_vocabulary

IGNORE = -100  # targets already scored by another validation window


class LanguageModelTask(Task):
    name = "language_model"
    monitor, mode = "val/loss", "min"
    unit = "tokens"

    def __init__(self, model: torch.nn.Module, cfg: dict[str, Any]):
        super().__init__(model, cfg)
        tok_cfg = (cfg.get("data") or {}).get("tokenizer") or {}
        self.char_level = tok_cfg.get("kind", "char") == "char" and not tok_cfg.get("path")
        self.metrics = ("bpc",) if self.char_level else ()  # the columns metrics.csv is opened with
        self.tokenizer = None
        self.sample: tuple[int, str] | None = None  # (step, text) of the latest sample, on rank 0
        self.sampled_at: int | None = None  # the step of the latest sample, on every rank

    def context(self, batch: Any) -> int:
        return int(batch[0].shape[1])

    def step(self, batch: Any) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        x, y = batch  # (B, T), (B, T)
        logits = self.run_model(tokens=x)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        # training windows score every position; counting them would cost a device sync per step
        n = y.numel() if self.training else int((y != IGNORE).sum())
        return loss, n, ({"bpc": loss / math.log(2)} if self.char_level else {})

    # --- tokenizer: from the data module, saved beside the run and inside each checkpoint --------------

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if self.tokenizer is None and dm is not None and hasattr(dm, "get_tokenizer"):
            self.tokenizer = dm.get_tokenizer()
        if self.tokenizer is None:
            return
        self.char_level = self.tokenizer.kind == "char"
        check_vocabulary(self.model.spec, self.roles, "tokens", "vocab", self.tokenizer.vocab_size)
        if stage == "fit":
            self.tokenizer.save(Path(self.trainer.default_root_dir) / "tokenizer.json")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.tokenizer is not None:
            checkpoint["builder"]["tokenizer"] = self.tokenizer.to_str()  # a str: weights_only loading still works

    # --- samples --------------------------------------------------------------------------------------

    def on_validation_epoch_end(self) -> None:
        if (self.trainer.sanity_checking or self.trainer.state.fn != "fit"
                or self.task_cfg.get("sample_after", "validation") == "training"):
            return
        self.record_sample(self.generate_sample())  # every rank takes part (FSDP gathers the weights)

    def on_train_end(self) -> None:
        if self.sampled_at != self.global_step:  # the same decision on every rank
            self.record_sample(self.generate_sample())
        if self.sample is not None and self.global_rank == 0:
            print(f"\nsample after {self.sample[0]} steps:\n{self.sample[1]}\n", flush=True)

    def record_sample(self, text: str | None) -> None:
        """Keep a sample (rank 0 gets the text, other ranks None): samples.txt and the loggers that take text."""
        if text is None:
            return
        self.sample = (self.global_step, text)
        with (Path(self.trainer.default_root_dir) / "samples.txt").open("a", encoding="utf-8") as f:
            f.write(f"--- step {self.global_step}\n{text}\n")
        for logger in self.trainer.loggers:  # the dashboards (builder/train/loggers.py) take tables of text
            if hasattr(logger, "log_text"):
                logger.log_text(key="sample", columns=["step", "text"], data=[[self.global_step, text]])

    def generate_sample(self) -> str | None:
        """`task.sample_tokens` tokens after `task.sample_prompt`, with a fixed seed so samples compare across
        steps; on rank 0 (None elsewhere), but every rank must call it (see rank_zero_model)."""
        n = int(self.task_cfg.get("sample_tokens", 200) or 0)
        if n <= 0 or self.tokenizer is None:
            return None
        self.sampled_at = self.global_step
        prompt = self.task_cfg.get("sample_prompt") or "\n"
        try:
            ids = self.tokenizer.encode(prompt)
        except ValueError:
            ids = []
        ids = ids or [0]  # a prompt the alphabet cannot spell starts from token 0
        with rank_zero_model(self) as model:
            if model is None:
                return None
            out = decode(lm_step(model, self.roles), torch.tensor([ids], device=self.device), max_new_tokens=n,
                         temperature=float(self.task_cfg.get("sample_temperature", 0.8)),
                         top_k=self.task_cfg.get("sample_top_k"),
                         generator=torch.Generator(self.device).manual_seed(int(self.cfg.get("seed", 0))))
        return self.tokenizer.decode(ids + out[0, len(ids):].tolist())
