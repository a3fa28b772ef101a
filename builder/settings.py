"""Typed settings with ranges, for everything a config or a command sets besides the model graph.

One mechanism for all of it: a schema maps each key to a Setting (a type written as an annotation, a default,
a range or choices, a line of documentation) or to a nested schema. `check` returns every problem at once, each
one line naming the key, the value and what is allowed, with a did-you-mean for unknown keys; it runs before
torch is imported. The same schemas drive the command-line arguments of every command (builder/cli/args.py)
and their --help.

The schemas of the run options, the optimiser, the trainer keys we own, each built-in task and data source are
here; Lightning's Trainer arguments are checked against its own signature, read from its source.
"""
from __future__ import annotations

import ast
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from builder.errors import suggest
from builder.graph.typecheck import type_ok

REQUIRED = object()  # a setting without a default


@dataclass(frozen=True)
class Setting:
    type: str  # an annotation: "int", "float | None", "list[str]", "Literal['a', 'b']"
    default: Any = REQUIRED
    doc: str = ""
    low: float | None = None
    high: float | None = None
    above: bool = False  # the low end is excluded
    items: Any = None  # for a list of mappings: the schema of each item

    def allowed(self) -> str:
        kind = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
        base = self.type.replace(" | None", "")
        text = kind.get(base, base)
        if base.startswith("Literal["):
            text = "one of " + ", ".join(dict.fromkeys(base[len("Literal["):-1].replace("'", "").split(", ")))
        low, high = (f"{v:g}" if isinstance(v, float) else str(v) for v in (self.low, self.high))
        if self.low is not None and self.high is not None:
            text += f" in {'(' if self.above else '['}{low}, {high}]"
        elif self.low is not None:
            text += f" {'>' if self.above else '>='} {low}"
        elif self.high is not None:
            text += f" <= {high}"
        return text + (" or null" if "None" in self.type else "")

    def problem(self, path: str, value: Any) -> str | None:
        if value is REQUIRED or (value is None and "None" not in self.type and self.default is REQUIRED):
            return f"{path}: required ({self.allowed()})"
        ok = type_ok(value, self.type)
        if ok and isinstance(value, (int, float)) and not isinstance(value, bool):
            ok = math.isfinite(value) and not (
                (self.low is not None and (value <= self.low if self.above else value < self.low))
                or (self.high is not None and value > self.high))
        return None if ok else f"{path}: {value!r} is not allowed; expected {self.allowed()}"


Schema = Mapping[str, Any]  # key -> Setting or a nested Schema


def check(values: Any, schema: Schema, path: str, open_keys: bool = False) -> list[str]:
    """Every problem of `values` (a mapping) against `schema`; `open_keys` lets keys outside it pass."""
    if not hasattr(values, "items"):
        return [f"{path}: expected a mapping, got {values!r}"]
    problems = []
    for key, value in values.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in schema:
            if not open_keys and not str(key).startswith("_"):
                problems.append(f"{where}: no such key{suggest(key, schema)}; keys: {', '.join(schema)}")
        elif isinstance(schema[key], Setting):
            problem = schema[key].problem(where, value)
            if problem:
                problems.append(problem)
            elif schema[key].items is not None and isinstance(value, list):
                for i, item in enumerate(value):
                    problems += check(item, schema[key].items, f"{where}[{i}]")
        elif value is not None:
            problems += check(value, schema[key], where)
    for key, setting in schema.items():
        if isinstance(setting, Setting) and setting.default is REQUIRED and key not in values:
            problems.append(f"{path}.{key}: required ({setting.allowed()})" if path else f"{key}: required")
    return problems


def describe(schema: Schema, prefix: str = "") -> list[str]:
    """`key=default  allowed. doc` lines, for --help and the README."""
    lines = []
    for key, s in schema.items():
        if isinstance(s, Setting):
            if s.default is REQUIRED:
                default = " (required)"
            elif s.default is None or isinstance(s.default, bool):
                default = "=" + {None: "null", True: "true", False: "false"}[s.default]
            else:
                default = f"={s.default!r}" if isinstance(s.default, str) else f"={s.default}"
            lines.append(f"  {prefix}{key}{default}  {s.allowed()}{'. ' + s.doc if s.doc else ''}")
        else:
            lines += describe(s, f"{prefix}{key}.")
    return lines


def S(type: str, default: Any = REQUIRED, doc: str = "", low: float | None = None, high: float | None = None,
      above: bool = False, items: Any = None) -> Setting:
    return Setting(type, default, doc, low, high, above, items)


# --- run options (the top level of conf/train.yaml) -------------------------------------------------------

GROUPS = ("data", "model", "task", "optim", "trainer", "logger", "sweep", "cluster", "experiment", "hydra", "adapters")
RUN = {
    "imports": S("list[str]", [], "modules of your own that register tasks, data sources or blocks"),
    "seed": S("int | None", 0, "seeds weights, data order and dropout; null draws one", low=0, high=2**32 - 1),
    "attention_maps": S("bool", False, "draw one validation example's attention at each validation"),
    "compile": S("bool", False, "torch.compile the model for training"),
    "threads": S("int | None", 1, "torch threads per process; null: PyTorch's default", low=1),
    "ckpt_every_n_steps": S("int | None", None, "also refresh checkpoints/last.ckpt every N optimizer steps", low=1),
    "run_dir": S("str | None", None, "the run directory; null: outputs/<date>/<time>"),
    "resume": S("str | None", None, "RUN_DIR, a .ckpt file, latest or auto"),
    "outputs_dir": S("str", "outputs", "where dated run directories and the latest link go"),
    "generation": S("dict | None", None, "eos_id: where generation stops (read from a Hugging Face directory)"),
    "init_from": S("str | None", None, "RUN_DIR, a .ckpt file, an export or a Hugging Face directory: start from "
                   "its weights and tokenizer, with its model"),
}

# conf/adapters: none, or LoRA on the linear layers of the nodes `targets` names (builder/graph/adapters.py)
ADAPTERS = {
    "none": {"name": S("str")},
    "lora": {"name": S("str"), "targets": S("list[str]", doc="node names, * for one name part: layers.*.attn"),
             "rank": S("int", 8, low=1), "alpha": S("float", 16.0, "the update is scaled by alpha / rank", low=0,
                                                    above=True),
             "dropout": S("float", 0.0, "on the adapters' input", low=0, high=1),
             "save": S("Literal['adapters_only', 'full']", "adapters_only", "what checkpoints hold")},
}

OPTIM = {
    "optimizer": S("dict", doc="a torch optimiser as a Hydra _target_ with _partial_: true"),
    "lr": S("float", doc="peak learning rate", low=0, above=True),
    "weight_decay": S("float", 0.0, "decay of matrices (not norms, biases, embeddings)", low=0),
    "schedule": S("Literal['cosine', 'inverse_sqrt']", "cosine"),
    "warmup_steps": S("int", 0, "linear warmup, in optimizer steps", low=0),
    "decay_steps": S("int | None", None, "cosine decay length; null: the whole run", low=1),
    "min_lr": S("float", 0.0, "the cosine's floor", low=0),
}

# trainer keys of our own; the others are lightning.Trainer's arguments (checked against its signature), with
# the ranges below where a wrong value would otherwise end in a Lightning traceback
TRAINER_OWN = {"process_group_timeout": S("float", 1800, "seconds a collective waits for the other processes",
                                          low=0, above=True),
               "startup_timeout": S("float", 600, "seconds the processes wait for each other to start", low=0,
                                    above=True),
               "peak_flops": S("float | None", None, "the device's FLOP/s, for train/mfu (known GPUs: from a table)",
                               low=0, above=True)}
TRAINER_RANGES = {
    "accelerator": S("Literal['auto', 'cpu', 'gpu', 'cuda', 'mps', 'tpu']", "auto"),
    "max_steps": S("int", -1, low=-1), "max_epochs": S("int | None", None, low=-1),
    "devices": S("int | str | list[int]", 1), "num_nodes": S("int", 1, low=1),
    "accumulate_grad_batches": S("int", 1, low=1), "gradient_clip_val": S("float | None", None, low=0),
    "log_every_n_steps": S("int", 50, low=1), "check_val_every_n_epoch": S("int | None", 1, low=1),
    "val_check_interval": S("int | float | None", None, low=0, above=True),
    "num_sanity_val_steps": S("int", 2, low=-1),
    "precision": S("Literal['32-true', '32', 32, '16-mixed', '16', 16, 'bf16-mixed', 'bf16', 'bf16-true', "
                   "'16-true', '64-true', '64', 64, 'transformer-engine', 'transformer-engine-float16'] | None", None),
}

ROLES = {"inputs": S("dict | None", None), "outputs": S("dict | None", None), "sizes": S("dict | None", None)}
TASK_COMMON = {"name": S("str"), "monitor": S("str | None", None), "mode": S("Literal['min', 'max'] | None", None),
               **ROLES}
TASKS = {
    "classification": {**TASK_COMMON, "loss": S("Literal['cross_entropy', 'mse', 'l1']", "cross_entropy")},
    "language_model": {**TASK_COMMON,
                       "sample_tokens": S("int", 200, "tokens in each sample; 0: no samples", low=0),
                       "sample_after": S("Literal['validation', 'training']", "validation",
                                         "sample after each validation, or once after training"),
                       "sample_prompt": S("str", "\n"), "sample_temperature": S("float", 0.8, low=0),
                       "sample_top_k": S("int | None", None, low=1)},
    "masked_lm": {**TASK_COMMON,
                  "mask_rate": S("float", 0.15, "the share of tokens chosen for prediction", low=0, high=1, above=True),
                  "mask_replace": S("float", 0.8, "of the chosen: the share replaced by mask_token", low=0, high=1),
                  "random_replace": S("float", 0.1, "of the chosen: the share replaced by a random token", low=0,
                                      high=1),
                  "mask_token": S("str", "[MASK]"),
                  "special_tokens": S("list[str]", ["[PAD]", "[CLS]", "[SEP]", "[MASK]"],
                                      "never chosen; data=text adds those its tokenizer lacks")},
    "seq2seq": {**TASK_COMMON, "label_smoothing": S("float", 0.0, low=0, high=1),
                "eval_num_beams": S("int", 1, low=1), "max_len_ratio": S("float", 2.0, low=0, above=True),
                "bleu_tokenize": S("str", "auto"), "show_examples": S("int", 0, low=0)},
}

PAIR_TOKENIZER = {"kind": S("Literal['char', 'bpe']", "char"), "shared": S("bool", False),
                  "vocab_size": S("int", 1000, low=1), "path": S("str | None", None)}
PAIRS = {"seed": S("int", 0, low=0), "reverse": S("bool", False), "tokenizer": PAIR_TOKENIZER,
         "max_src_len": S("int", 256, low=1), "max_tgt_len": S("int", 256, low=1), "batch_size": S("int", 64, low=1),
         "eval_batch_mult": S("int", 4, low=1), "bucket_pool": S("int", 50, low=1),
         "num_workers": S("int", 0, low=0)}
DATA = {
    "text": {"name": S("str"), "path": S("str | list[str] | None", None, "a file, a directory or a glob"),
             "hf_dataset": S("dict | None", None, "{path, name, split, column, streaming}"),
             "separator": S("str", "\n\n"), "val_fraction": S("float", 0.1, low=0, high=1, above=True),
             "block_size": S("int", low=1), "batch_size": S("int", low=1),
             "val_batch_size": S("int | None", None, low=1), "max_val_windows": S("int | None", None, low=1),
             "tokenizer": {"kind": S("Literal['char', 'bpe']", "char"), "vocab_size": S("int", 4096, low=1),
                           "train_bytes": S("int | float | None", None, low=1), "path": S("str | None", None),
                           "special_tokens": S("list[str] | None", None)},
             "cache_dir": S("str", "outputs/cache/text"), "num_workers": S("int", 0, low=0)},
    "leaf_flower": {"name": S("str"), "classes": S("list[str]"),
                    "examples": S("list", items={"name": S("str"), "features": S("list[float]"), "label": S("str")}),
                    "noise_std": S("list[float]"), "n_train": S("int", low=1), "n_val": S("int", low=1),
                    "n_test": S("int", 2000, low=1), "seed": S("int", low=0), "batch_size": S("int", low=1),
                    "num_workers": S("int", 0, low=0), "bayes_samples": S("int", 0, low=0)},
    "numbers": {"name": S("str"), "path": S("str | list[str] | None", None), "n_train": S("int", low=1),
                "n_val": S("int", low=1), "n_test": S("int", low=1), **PAIRS},
    "text_classes": {"name": S("str"), "path": S("str | None", None, "a TSV of label<TAB>text lines (required)"),
                     "val_path": S("str | None", None), "val_fraction": S("float", 0.1, low=0, high=1, above=True),
                     "seed": S("int", 0, low=0), "classes": S("list[str] | None", None),
                     "max_len": S("int | None", None, "tokens per text", low=2), "batch_size": S("int", 32, low=1),
                     "val_batch_size": S("int | None", None, low=1), "num_workers": S("int", 0, low=0),
                     "tokenizer": {"kind": S("Literal['char', 'bpe']", "char"), "vocab_size": S("int", 1000, low=1),
                                   "path": S("str | None", None), "special_tokens": S("list[str] | None", None),
                                   "pad_token": S("str", "[PAD]")}},
    "parallel": {"name": S("str"), "train": S("str | list[str]"), "val": S("str | list[str] | None", None),
                 "test": S("str | list[str] | None", None), "val_size": S("int", 1000, low=0),
                 "test_size": S("int", 1000, low=0), **PAIRS},
}


def trainer_arguments() -> dict[str, Setting]:
    """lightning.Trainer's keyword arguments with their annotations and defaults, read from its source (so a
    config is checked without importing Lightning), the ranges above taking precedence."""
    spec = importlib.util.find_spec("lightning")  # a top-level package is located without being imported
    source = Path(spec.origin).parent / "pytorch" / "trainer" / "trainer.py" if spec and spec.origin else None
    if source is None or not source.is_file():
        return dict(TRAINER_RANGES)
    tree = ast.parse(source.read_text(encoding="utf-8"))
    init = next(f for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "Trainer"
                for f in c.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    found = {}
    for arg, default in zip(init.args.kwonlyargs, init.args.kw_defaults):
        annotation = ast.unparse(arg.annotation) if arg.annotation is not None else "Any"
        found[arg.arg] = Setting(annotation, None if default is None else REQUIRED)
    found.update(TRAINER_RANGES)
    return found


def check_trainer(values: Any, path: str = "trainer") -> list[str]:
    """Our trainer keys, and the rest against lightning.Trainer's signature and the ranges above."""
    schema = {"_target_": S("str"), **TRAINER_OWN, **trainer_arguments()}
    return check(values, {k: (v if v.default is not REQUIRED or k == "_target_" else
                              Setting(v.type, None, v.doc, v.low, v.high, v.above)) for k, v in schema.items()},
                 path)
