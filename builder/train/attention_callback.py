"""The attention-map callback: at each validation, the attention of one validation example, drawn per
layer and sent to the dashboards as images (and kept under <run>/attention/step_<N>/).

Switched on with `attention_maps: true` in the config; inspection happens only here, after validation,
so training keeps the fused attention path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image

from builder.graph.attention import capture_attention, save_heatmaps, token_axes
from builder.train.distributed import rank_zero_model

MAX_TOKENS = 48  # longer examples are cut: a heatmap of more tokens than this is unreadable


def example_of(task: Any, batch: Any) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]] | None:
    """Model inputs (one row, by the model's own input names) and their tokens from a validation batch of a
    language or translation task."""
    roles = task.roles
    if task.name == "language_model" and task.tokenizer is not None:
        x, name = batch[0][:1, :MAX_TOKENS], roles.inputs["tokens"]
        return {name: x}, {name: [task.tokenizer.decode([i]) for i in x[0].tolist()]}
    if task.name == "seq2seq" and task.src_tok is not None:
        src, src_pad = batch["src"][:1], batch["src_pad"][:1]
        tgt, tgt_pad = batch["tgt_in"][:1], batch["tgt_pad"][:1]
        n_src, n_tgt = min(int((~src_pad).sum()), MAX_TOKENS), min(int((~tgt_pad).sum()), MAX_TOKENS)
        inputs = roles.feed(source=src[:, :n_src], source_padding=src_pad[:, :n_src], target=tgt[:, :n_tgt],
                            target_padding=tgt_pad[:, :n_tgt])
        return inputs, {roles.inputs["source"]: [task.src_tok.decode([i]) for i in src[0, :n_src].tolist()],
                        roles.inputs["target"]: [task.tgt_tok.decode([i]) or "<s>" for i in tgt[0, :n_tgt].tolist()]}
    return None


class AttentionMaps(L.Callback):
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.batch: Any = None

    def on_validation_batch_start(self, trainer: L.Trainer, task: Any, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        if batch_idx == 0:
            self.batch = batch  # the same example every time: the first of the validation set

    def on_validation_end(self, trainer: L.Trainer, task: Any) -> None:
        # every rank gets here with the same first batch: under FSDP all of them gather the weights
        if trainer.sanity_checking or self.batch is None:
            return
        found = example_of(task, self.batch)
        if found is None:
            return
        inputs, tokens = found
        with rank_zero_model(task) as model:
            if model is None:
                return
            maps = capture_attention(model, lambda: model(**inputs))
        out = self.run_dir / "attention" / f"step_{trainer.global_step}"
        paths = []
        for name, w in maps.items():
            queries, keys = token_axes(model.spec, name, tokens)
            paths += save_heatmaps({name: w}, queries, keys, out)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # wandb: one panel per attention node
                for p in paths:
                    logger.log_image(key=f"attention/{p.stem}", images=[str(p)], step=trainer.global_step)
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
                for p in paths:
                    image = np.asarray(Image.open(p).convert("RGB"))
                    logger.experiment.add_image(f"attention/{p.stem}", image, trainer.global_step, dataformats="HWC")
            elif hasattr(getattr(logger, "experiment", None), "log_artifact"):  # MLflow: files under attention/step_N
                for p in paths:
                    logger.experiment.log_artifact(logger.run_id, str(p), f"attention/step_{trainer.global_step}")
