"""Python API for trained models: `model = builder.load(path)`, then task-specific methods.

    model = builder.load("outputs/2025-01-01/12-00-00")   # run dir, .ckpt file or export directory
    labels, probs = model.predict([[32, 107, 56, 11.2]])   # (["leaf"], tensor([[0.99.., 0.00..]]))

Each task has a loaded-model class (classification: `Classifier.predict`); language models and translators
extend `LoadedModel` the same way (`generate`, `translate`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

from builder import checkpoint


class LoadedModel:
    """A trained graph model with its run config, ready for inference (eval mode, no gradients)."""

    def __init__(self, loaded: checkpoint.Loaded):
        self.model = loaded.model
        self.config = loaded.config
        self.path = loaded.path
        self.tokenizer_json = loaded.tokenizer

    @property
    def task(self) -> str:
        return self.config["task"]["name"]

    @torch.no_grad()
    def __call__(self, *inputs: Any, **named: Any) -> Any:
        return self.model(*inputs, **named)

    def export(self, out: str | Path) -> Path:
        """model.safetensors + config.yaml in `out`, loadable with `builder.load(out)`."""
        return checkpoint.export(checkpoint.Loaded(self.model, self.config, self.path, self.tokenizer_json), out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, path='{self.path}')"


class Prediction(NamedTuple):
    labels: list[str]
    probs: torch.Tensor  # (N, C) softmax probabilities, columns in `classes` order


class Classifier(LoadedModel):
    @property
    def classes(self) -> list[str]:
        data = self.config.get("data", {})
        n = self.config["model"].get("num_classes")
        return list(data.get("classes") or [str(i) for i in range(n or 0)])

    @torch.no_grad()
    def predict(self, inputs: Any) -> Prediction:
        """Labels and class probabilities for one input row or a batch of rows (raw values)."""
        x = torch.as_tensor(inputs, dtype=torch.float32)
        if x.dim() == 1:
            x = x[None]  # one sample -> a batch of one
        out = self.model(x)
        if isinstance(out, dict):
            out = out[self.config["task"].get("output") or next(iter(out))]
        probs = out.float().softmax(-1)  # (N, C)
        classes = self.classes
        if len(classes) != probs.shape[-1]:
            classes = [str(i) for i in range(probs.shape[-1])]  # the config names a different number of classes
        return Prediction([classes[i] for i in probs.argmax(-1).tolist()], probs)


# task name -> the loaded-model class (by import path, imported only when such a model is loaded)
LOADED = {
    "classification": "builder.api:Classifier",
    "language_model": "builder.lm:LanguageModel",
    "seq2seq": "builder.translation:Translator",
}


def loaded_class(task: str) -> type[LoadedModel]:
    import importlib
    target = LOADED.get(task)
    if target is None:
        return LoadedModel
    if isinstance(target, str):
        module, name = target.split(":")
        target = getattr(importlib.import_module(module), name)
    return target


def load(path: str | Path, allow_imports: bool = False) -> LoadedModel:
    """A trained model from a run directory (its best checkpoint), a .ckpt file or an export directory.

    allow_imports=True lets the model's `imports:` modules (user blocks) be imported; they run code.
    """
    loaded = checkpoint.load(path, allow_imports=allow_imports)
    return loaded_class(loaded.config["task"]["name"])(loaded)
