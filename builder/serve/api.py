"""Python API for trained models: `model = builder.load(path)`, then task-specific methods.

    model = builder.load("outputs/2025-01-01/12-00-00")   # run dir, .ckpt file or export directory
    labels, probs = model.predict([[32, 107, 56, 11.2]])   # (["leaf"], tensor([[0.99.., 0.00..]]))

Each task has a loaded-model class (classification: `Classifier.predict`); language models and translators
extend `LoadedModel` the same way (`generate`, `translate`).
"""
from __future__ import annotations

import importlib
import math
import numbers
import reprlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from builder.contract import Roles, context_length
from builder.errors import ConfigError
from builder.graph.shapes import DTYPES
from builder.plugins import TASKS
from builder.serve import checkpoint
from builder.tokenizer import Tokenizer
from builder.train.data.special import check_characters, encode_texts


def shown(value: Any) -> str:
    """A short one-line repr for error messages."""
    return " ".join(reprlib.repr(value).split())


def check_number(arg: str, value: Any, low: float | None = None, high: float | None = None, *,
                 integer: bool = False, above: bool = False, optional: bool = False) -> Any:
    """`value` itself when it is a finite number (an integer if `integer`) >= low (> low if `above`) and
    <= high, or None when `optional`; anything else is a one-line ConfigError naming `arg` and the range."""
    if value is None and optional:
        return value
    ok = (isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
          and (integer or math.isfinite(value)))
    if ok and low is not None:
        ok = value > low if above else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        if low is not None and high is not None:
            bounds = f" in {'(' if above else '['}{low}, {high}]"
        elif low is not None:
            bounds = f" {'>' if above else '>='} {low}"
        else:
            bounds = "" if high is None else f" <= {high}"
        wanted = f"{'an integer' if integer else 'a number'}{bounds}{' or None' if optional else ''}"
        raise ConfigError(f"{arg}: expected {wanted}; got {shown(value)}")
    return value


def as_texts(arg: str, value: Any) -> tuple[list[str], bool]:
    """(texts, one): a str as a list of one with one=True, a list or tuple of str as a list; anything else is a
    one-line ConfigError naming `arg`."""
    if isinstance(value, str):
        return [value], True
    if isinstance(value, (list, tuple)):
        bad = next((i for i, t in enumerate(value) if not isinstance(t, str)), None)
        if bad is None:
            return list(value), False
        raise ConfigError(f"{arg}: expected a str or a list of str; item {bad} is {shown(value[bad])} "
                          f"({type(value[bad]).__name__})")
    raise ConfigError(f"{arg}: expected a str or a list of str; got {shown(value)} ({type(value).__name__})")


def as_input(arg: str, value: Any, name: str, spec: dict[str, Any], one_row: bool = False) -> torch.Tensor:
    """`value` (nested lists, a numpy array or a tensor) as a tensor for the model input `name`, whose spec is
    {"shape": [batch, ...], "dtype": ...}: numbers of the spec's rank and fixed sizes, else a one-line
    ConfigError naming `arg`. With one_row, one sample without the batch dimension is a batch of one and []
    an empty batch."""
    shape = list(spec["shape"])
    text = f"[{', '.join(map(str, shape))}]"
    if len(shape) == 2 and isinstance(shape[1], int):
        need = f"each row needs {shape[1]} values (the model's input {name} has shape {text})"
    else:
        need = f"the model's input {name} has shape {text}"
    if isinstance(value, torch.Tensor):
        x = value
    else:
        try:
            a = np.asarray(value)
        except ValueError:  # nested lists of different lengths
            rows = value if isinstance(value, (list, tuple)) else []
            lengths = sorted({len(r) for r in rows if isinstance(r, (list, tuple))})
            got = f" ({', '.join(map(str, lengths))})" if len(lengths) > 1 else ""
            raise ConfigError(f"{arg}: rows differ in length{got}; {need}") from None
        if a.dtype.kind not in "biuf":  # text, None, objects
            bad = next((v for v in a.ravel().tolist() if not isinstance(v, numbers.Real)), value)
            raise ConfigError(f"{arg}: expected numbers; {need}; got {shown(bad)}")
        x = torch.as_tensor(a)
    if one_row and x.shape == (0,) and len(shape) > 1:  # [] has no row size to read: an empty batch
        x = x.reshape(0, *(d if isinstance(d, int) else 1 for d in shape[1:]))
    if one_row and x.dim() == len(shape) - 1:
        x = x[None]  # one sample -> a batch of one
    if x.dim() != len(shape):
        got = shown(value) if x.dim() == 0 else f"a {x.dim()}-dimensional array of shape {list(x.shape)}"
        raise ConfigError(f"{arg}: expected {'one row or ' if one_row else ''}a batch; {need}; got {got}")
    if any(isinstance(d, int) and n != d for d, n in zip(shape, x.shape)):
        got = f"rows of {x.shape[1]}" if len(shape) == 2 else f"shape {list(x.shape)}"
        raise ConfigError(f"{arg}: {need}; got {got}")
    return x.to(DTYPES[spec.get("dtype", "float")])


class LoadedModel:
    """A trained graph model with its run config, ready for inference (eval mode, no gradients)."""

    def __init__(self, loaded: checkpoint.Loaded):
        self.model = loaded.model
        self.config = loaded.config
        self.path = loaded.path
        self.tokenizer_json = loaded.tokenizer
        self.roles = Roles(loaded.config["task"], loaded.model.spec)  # the task's roles -> the model's names

    @property
    def task(self) -> str:
        return self.config["task"]["name"]

    @torch.no_grad()
    def __call__(self, *inputs: Any, **named: Any) -> Any:
        """The model's raw output for all its inputs, by position or name: nested lists, numpy arrays or
        tensors with the batch dimension, checked against the input specs; other keywords (state) pass on."""
        specs = getattr(self.model, "input_specs", None)
        if specs is None:
            return self.model(*inputs, **named)
        names = list(specs)
        if len(inputs) > len(names):
            raise ConfigError(f"inputs: the model takes {len(names)} input{'s' if len(names) != 1 else ''} "
                              f"({', '.join(names)}); got {len(inputs)}")
        given = dict(zip(names, inputs))
        both = sorted(set(given) & set(named))
        missing = [n for n in names if n not in given and n not in named]
        if both or missing:
            raise ConfigError(f"{(both or missing)[0]}: {'given twice' if both else 'missing'}; the model's inputs "
                              f"are {', '.join(names)}")
        given |= {n: named.pop(n) for n in names if n in named}
        return self.model(**{n: as_input(n, v, n, specs[n]) for n, v in given.items()}, **named)

    def text_tokenizer(self) -> Any:
        """The model's tokenizer (builder.tokenizer.Tokenizer); a model without one is a one-line ConfigError."""
        if getattr(self, "_tokenizer", None) is None:
            if not self.tokenizer_json:
                raise ConfigError(f"ckpt: {self.path} holds no tokenizer, so text cannot be encoded for it")
            self._tokenizer = Tokenizer.from_str(self.tokenizer_json)
        return self._tokenizer

    def export(self, out: str | Path) -> Path:
        """model.safetensors + config.yaml in `out`, loadable with `builder.load(out)`."""
        return checkpoint.export(checkpoint.Loaded(self.model, self.config, self.path, self.tokenizer_json), out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, path='{self.path}')"


def token_inputs(loaded: "LoadedModel", texts: list[str], role: str, arg: str, truncate: bool = False
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(model inputs by the model's own names, attention mask (N, T)) for texts encoded with the loaded model's
    tokenizer and its special tokens: the ids go to the input `role` is bound to, and to the optional roles
    attention_mask (1 at tokens, 0 at padding) and token_types (zeros) where the model has them. A text longer
    than the model's positions is cut (truncate) or a one-line ConfigError naming `arg`."""
    tok = loaded.text_tokenizer()
    limit = context_length(loaded.model.spec, loaded.roles.inputs[role])
    pad_token = ((loaded.config.get("data") or {}).get("tokenizer") or {}).get("pad_token") or "[PAD]"
    try:
        check_characters(tok, texts, arg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    ids, mask = encode_texts(tok, texts, limit if truncate else None, tok.tok.token_to_id(pad_token) or 0)
    if limit is not None and ids.shape[1] > limit:
        raise ConfigError(f"{arg}: {ids.shape[1]} tokens, more than the model's {limit} positions")
    device = next(loaded.model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    return loaded.roles.feed(**{role: ids, "attention_mask": mask, "token_types": torch.zeros_like(ids)}), mask


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
        """Labels and class probabilities for raw input values: one row (a batch of one), a batch of rows, or
        an empty batch ([] or 0 rows: labels [] and probs of shape (0, C)); nested lists, numpy arrays and
        tensors alike. Another width or rank, ragged rows or non-numbers raise a one-line ConfigError. A model
        with a tokenizer also takes a text or a list of texts (encoded as in training, cut to its positions)."""
        name = self.roles.inputs["features"]
        texts = [inputs] if isinstance(inputs, str) else inputs
        is_text = isinstance(texts, (list, tuple)) and texts and all(isinstance(t, str) for t in texts)
        if self.tokenizer_json and is_text:
            feed, _ = token_inputs(self, list(texts), "features", "inputs", truncate=True)
        else:
            x = as_input("inputs", inputs, name, self.model.input_specs[name], one_row=True)
            feed = self.roles.feed(features=x, attention_mask=torch.ones_like(x), token_types=torch.zeros_like(x))
        probs = self.roles.read(self.model(**feed)).float().softmax(-1)  # (N, C)
        classes = self.classes
        if len(classes) != probs.shape[-1]:
            classes = [str(i) for i in range(probs.shape[-1])]  # the config names a different number of classes
        return Prediction([classes[i] for i in probs.argmax(-1).tolist()], probs)


def load(path: str | Path, allow_imports: bool = False) -> LoadedModel:
    """A trained model from a run directory (its best checkpoint), a .ckpt file or an export directory.

    allow_imports=True lets the model's `imports:` modules (user blocks) be imported; they run code.
    """
    loaded = checkpoint.load(path, allow_imports=allow_imports)
    entry = TASKS.entries.get(loaded.config["task"]["name"])
    if entry is None:
        return LoadedModel(loaded)
    module, attr = entry.meta["loaded"].split(":")
    return getattr(importlib.import_module(module), attr)(loaded)
