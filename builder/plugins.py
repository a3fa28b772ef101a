"""Named registries for what a config picks by name besides blocks: tasks (`task.name`) and data sources
(`data.name`). One mechanism for both, as for blocks: built-ins are listed by import path (so a config is
checked without importing torch), a user registers more with a decorator in a module the config names under
`imports:`, and installed packages add theirs through an entry-point group (`builder.tasks`, `builder.data`).

    from builder import data_source, task

    @data_source("my_csv", provides=("features",))
    class MyCSV(L.LightningDataModule): ...

    @task("ranking", inputs=("query", "document"), outputs=("scores",), loaded="my_pkg.api:Ranker")
    class Ranking(builder.train.tasks.base.Task): ...

Names are looked up, never import paths from a config, so a checkpoint cannot make us import code: a run whose
config lists `imports:` loads only with allow_imports=true.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass, field
from typing import Any, Callable

from builder.errors import ConfigError, suggest


@dataclass
class Entry:
    name: str
    target: str  # "module:attr" of the class, imported on first use
    meta: dict[str, Any] = field(default_factory=dict)  # what the kind declares (roles, what data provides)
    obj: Any = None

    def load(self) -> Any:
        if self.obj is None:
            module, attr = self.target.split(":")
            self.obj = getattr(importlib.import_module(module), attr)
        return self.obj


class Registry:
    def __init__(self, kind: str, group: str, builtins: dict[str, Entry]):
        self.kind, self.group = kind, group
        self.entries = dict(builtins)
        self._entry_points_loaded = False

    def register(self, name: str, **meta: Any) -> Callable[[Any], Any]:
        """A decorator: register the class under `name`, with what this kind declares (`meta`)."""
        def add(obj: Any) -> Any:
            old = self.entries.get(name)
            target = f"{obj.__module__}:{obj.__qualname__}"
            if old is not None and old.target != target:
                raise ConfigError(f"{self.kind} '{name}' is registered twice: {old.target} and {target}")
            self.entries[name] = Entry(name, target, meta, obj)
            return obj
        return add

    def names(self) -> list[str]:
        self._load_entry_points()
        return list(self.entries)

    def entry(self, name: Any, path: str) -> Entry:
        """The entry for `name`, or a one-line ConfigError at `path` with a did-you-mean."""
        self._load_entry_points()
        if name not in self.entries:
            raise ConfigError(self.unknown(name, path))
        return self.entries[name]

    def unknown(self, name: Any, path: str) -> str:
        return (f"{path}: unknown {self.kind} '{name}'{suggest(name, self.entries)}; available: "
                f"{', '.join(self.entries)} (a module of your own registers more: imports: [my_pkg.module])")

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=self.group):
            ep.load()  # an installed package's module registers its entries on import


def import_modules(modules: list[str] | tuple[str, ...], path: str = "imports") -> None:
    """Import the user modules a config names (they register blocks, tasks or data sources)."""
    if not isinstance(modules, (list, tuple)):
        raise ConfigError(f"{path}: expected a list of Python module names, got {modules!r}")
    for i, module in enumerate(modules):
        if not isinstance(module, str) or not module:
            raise ConfigError(f"{path}[{i}]: expected a Python module name, got {module!r}")
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"{path}[{i}]: cannot import '{module}': {e}") from None


TASKS = Registry("task", "builder.tasks", {
    "classification": Entry("classification", "builder.train.tasks.classification:ClassificationTask", dict(
        inputs=("features", "attention_mask", "token_types"), outputs=("logits",), sizes=("vocab", "classes"),
        optional=("attention_mask", "token_types", "vocab", "classes"), needs="features",
        losses=("cross_entropy", "mse", "l1"), loaded="builder.serve.api:Classifier")),
    "language_model": Entry("language_model", "builder.train.tasks.language_model:LanguageModelTask", dict(
        inputs=("tokens",), outputs=("logits",), sizes=("vocab",), needs="tokenizer",
        loaded="builder.serve.lm:LanguageModel")),
    "masked_lm": Entry("masked_lm", "builder.train.tasks.masked_lm:MaskedLMTask", dict(
        inputs=("tokens", "token_types", "attention_mask"), outputs=("logits",), sizes=("vocab",),
        optional=("token_types", "attention_mask"), needs="tokenizer", loaded="builder.serve.masked_lm:MaskedLM")),
    "seq2seq": Entry("seq2seq", "builder.train.tasks.seq2seq:Seq2SeqTask", dict(
        inputs=("source", "source_padding", "target", "target_padding"), outputs=("logits",),
        sizes=("source_vocab", "target_vocab"), needs="tokenizer_pair", loaded="builder.serve.translation:Translator")),
})

DATA = Registry("data source", "builder.data", {
    "leaf_flower": Entry("leaf_flower", "builder.train.data.leaf_flower:LeafFlowerData", dict(provides="features")),
    "text": Entry("text", "builder.train.data.text:TextData", dict(provides="tokenizer")),
    "numbers": Entry("numbers", "builder.train.data.numbers:NumbersData", dict(provides="tokenizer_pair")),
    "parallel": Entry("parallel", "builder.train.data.parallel:ParallelData", dict(provides="tokenizer_pair")),
    "text_classes": Entry("text_classes", "builder.train.data.text_classes:TextClassesData", dict(provides="features")),
})


def task(name: str, *, inputs: tuple[str, ...], outputs: tuple[str, ...] = ("logits",), sizes: tuple[str, ...] = (),
         needs: str | None = None, loaded: str | None = None, losses: tuple[str, ...] = (),
         settings: dict[str, Any] | None = None) -> Callable[[Any], Any]:
    """Register a Task subclass as `task.name: NAME` with its roles: the model `inputs` it feeds, the `outputs`
    it reads, the `sizes` it fills in from the data (see builder/contract.py); `needs` is what its data must
    provide (a data source's `provides`), `loaded` the "module:Class" of its Python API (default LoadedModel),
    `losses` the values `task.loss` may take (none: the task has no such choice), `settings` the typed schema of
    its other keys (builder/settings.py; without one, any keys pass)."""
    return TASKS.register(name, inputs=tuple(inputs), outputs=tuple(outputs), sizes=tuple(sizes), needs=needs,
                          loaded=loaded or "builder.serve.api:LoadedModel", losses=tuple(losses), settings=settings)


def data_source(name: str, *, provides: str | None = None, settings: dict[str, Any] | None = None
                ) -> Callable[[Any], Any]:
    """Register a LightningDataModule as `data.name: NAME`; it is built as Class(data_cfg, seed=seed).
    `provides` says what tasks may use it (features, tokenizer, tokenizer_pair, or a kind of your own);
    `settings` is the typed schema of its keys (builder/settings.py; without one, any keys pass)."""
    return DATA.register(name, provides=provides, settings=settings)
