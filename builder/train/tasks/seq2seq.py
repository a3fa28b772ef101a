"""Sequence to sequence (translation): an encoder-decoder trained with teacher forcing, scored on decoded text.

The model takes the roles source, source_padding, target, target_padding (pad masks True at padding; the
task config binds them to the model's input names) and returns next-token logits (B, T, V); the decoder reads <s> y and is trained to predict y </s> with label-smoothed cross-entropy.
Each validation greedily decodes the whole validation split and logs, next to val/loss:
    val/exact_match  fraction of outputs equal to the reference (0..1, on the progress bar)
    val/chrf         sacrebleu chrF (0..100)
    val/bleu         sacrebleu BLEU (0..100); tokenized by characters when every reference is one word
                     (as in the built-in number data), else by words (13a) — see task.bleu_tokenize
`trainer.test` logs the same under test/. Both tokenizers travel inside every checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import sacrebleu
import torch
import torch.nn.functional as F

from builder.contract import context_length
from builder.errors import ConfigError
from builder.pairs import special_ids, target_text, tokenizers_to_str
from builder.serve.seq2seq import generate
from builder.train.distributed import all_ranks, is_sharded
from builder.train.tasks.base import Task, check_vocabulary

IGNORE = -100  # label at padded target positions


def text_metrics(hyps: list[str], refs: list[str], bleu_tokenize: str = "auto") -> dict[str, float]:
    """exact_match (0..1), chrf and bleu (sacrebleu, 0..100) of a corpus of outputs."""
    if bleu_tokenize == "auto":  # single-word targets have no words to count n-grams of: use characters
        bleu_tokenize = "char" if not any(len(r.split()) > 1 for r in refs) else "13a"
    exact = sum(h == r for h, r in zip(hyps, refs)) / max(1, len(refs))
    return {"exact_match": exact, "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
            "bleu": sacrebleu.corpus_bleu(hyps, [refs], tokenize=bleu_tokenize).score}


class Seq2SeqTask(Task):
    name = "seq2seq"
    monitor, mode = "val/exact_match", "max"
    unit = "tokens"
    metrics = ("exact_match", "chrf", "bleu")

    def __init__(self, model: torch.nn.Module, cfg: dict[str, Any]):
        super().__init__(model, cfg)
        self.label_smoothing = float(self.task_cfg.get("label_smoothing", 0.0))
        self.src_tok = self.tgt_tok = None
        self.outputs: list[tuple[str, str]] = []  # (hypothesis, reference) of the current evaluation pass

    def forward_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.run_model(source=batch["src"], source_padding=batch["src_pad"], target=batch["tgt_in"],
                              target_padding=batch["tgt_pad"])  # (B, T, V)

    def step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        logits = self.forward_logits(batch)  # (B, T, V)
        labels = batch["labels"]  # (B, T)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                               label_smoothing=self.label_smoothing)
        return loss, int((labels != IGNORE).sum()), {}

    # --- tokenizers: from the data module, saved beside the run and inside each checkpoint -------------

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if self.tgt_tok is None and dm is not None and hasattr(dm, "get_tokenizers"):
            self.src_tok, self.tgt_tok = dm.get_tokenizers()
        if self.tgt_tok is None:
            raise ConfigError("task.name=seq2seq: the data module has no tokenizers "
                              "(use data=parallel or data=numbers)")
        spec, roles = self.model.spec, self.roles
        check_vocabulary(spec, roles, "source", "source_vocab", self.src_tok.vocab_size, predicted=False)
        check_vocabulary(spec, roles, "target", "target_vocab", self.tgt_tok.vocab_size)
        splits = getattr(dm, "ids", None) or {}
        for side, extra, pick in (("source", 0, 0), ("target", 1, 1)):  # the target gets <s> in front
            limit = context_length(spec, roles.inputs[side])
            longest = max((len(item[pick]) + extra for items in splits.values() for item in items), default=0)
            if limit is not None and longest > limit:  # fail now, not at the first long batch
                raise ConfigError(f"model: the {side} input '{roles.inputs[side]}' takes {limit} positions, but the "
                                  f"data holds a {side} of {longest} tokens; give the model more positions or lower "
                                  f"data.max_{'src' if side == 'source' else 'tgt'}_len")
        if stage == "fit":
            Path(self.trainer.default_root_dir, "tokenizer.json").write_text(self.tokenizer_json(), encoding="utf-8")

    def tokenizer_json(self) -> str:
        return tokenizers_to_str(self.src_tok, self.tgt_tok)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.tgt_tok is not None:
            checkpoint["builder"]["tokenizer"] = self.tokenizer_json()  # a str: weights_only loading still works

    # --- evaluation on decoded text -------------------------------------------------------------------

    def decode_batch(self, batch: dict[str, Any]) -> list[str]:
        """Greedy translations of a batch (task.eval_num_beams > 1: beam search)."""
        _, bos, eos = special_ids(self.tgt_tok)
        # every rank decodes the same batches; on a sharded model each step is a collective, so all stop together
        agree = (lambda finished: all_ranks(finished, self.device)) if is_sharded(self.model) else None
        rows = generate(self.model, self.roles, batch["src"], batch["src_pad"], bos, eos,
                        num_beams=int(self.task_cfg.get("eval_num_beams", 1)),
                        max_len_ratio=float(self.task_cfg.get("max_len_ratio", 2.0)), agree=agree)
        return [target_text(self.tgt_tok, r) for r in rows]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)  # val/loss
        self.outputs += list(zip(self.decode_batch(batch), batch["refs"]))

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, n, _ = self.step(batch)
        self.log("test/loss", loss, batch_size=n)
        self.outputs += list(zip(self.decode_batch(batch), batch["refs"]))

    def on_validation_epoch_start(self) -> None:
        self.outputs = []

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        self.log_text_metrics("val")

    def on_test_epoch_end(self) -> None:
        self.log_text_metrics("test")

    def log_text_metrics(self, split: str) -> None:
        if not self.outputs:
            return
        hyps, refs = (list(x) for x in zip(*self.outputs))
        for key, value in text_metrics(hyps, refs, self.task_cfg.get("bleu_tokenize", "auto")).items():
            self.log(f"{split}/{key}", value, prog_bar=key == "exact_match", sync_dist=True)
        if split == "val" and self.task_cfg.get("show_examples", 0):
            shown = "\n".join(f"  {h!r}  (ref {r!r})" for h, r in self.outputs[: int(self.task_cfg["show_examples"])])
            self.print(f"step {self.global_step} examples:\n{shown}")
        self.outputs = []
