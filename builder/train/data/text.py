"""Text for language modelling: a corpus -> tokenizer -> token ids cached as memory-mapped arrays -> windows.

The corpus is `data.path` (a UTF-8 file, or every file under a directory, in sorted order), a Hugging Face
`datasets` source (`data.hf_dataset`), or by default the text of CPython's own `pydoc_data.topics` (~465 KB),
so a fresh machine trains with no download. The last `val_fraction` of the text is the validation split.
Each split is tokenized once and cached under `cache_dir`, keyed by a hash of the text and of the tokenizer.

Training draws random contiguous windows of block_size + 1 tokens (input and shifted target). Validation
covers the whole split with fixed non-overlapping windows; a last window aligned to the end scores only the
targets the others missed (earlier ones are -100, ignored), so every validation token counts exactly once.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from builder.errors import ConfigError, suggest
from builder.tokenizer import Tokenizer, describe_missing, first_line, train_tokenizer

IGNORE = -100  # cross_entropy's ignore_index


def default_text() -> str:
    """CPython's documentation topics (what `help("assert")` shows): ~465 KB of English and code."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics.values())


def find_path(path: str) -> Path:
    """A relative path is looked up in the working directory, then in the project root (where conf/ is),
    so presets that name files beside the repository work from any directory."""
    from builder.config import CONF_DIR
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [p, CONF_DIR.parent / p]
    for c in candidates:
        if c.exists():
            return c
    raise ConfigError(f"data.path: {path} does not exist" +
                      ("" if p.is_absolute() else f" (looked in {Path.cwd()} and {CONF_DIR.parent})"))


def read_file(file: Path) -> str:
    """The file's text without a leading byte-order mark, with Windows line ends ("\\r\\n") as "\\n"."""
    data = file.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"data.path: {file} is not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} "
                          f"({e.reason})") from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def read_corpus(cfg: dict[str, Any]) -> str:
    """The whole corpus as one string; every way it can be unusable is a one-line ConfigError."""
    if cfg.get("hf_dataset"):
        return read_hf_dataset(cfg["hf_dataset"])
    if not cfg.get("path"):
        return default_text()
    path = find_path(cfg["path"])
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ConfigError(f"data.path: the directory {path} holds no files")
    text = "\n\n".join(read_file(f) for f in files)  # a blank line between documents
    if not text.strip():
        raise ConfigError(f"data.path: {path} is empty" if path.is_file() else f"data.path: the files under {path} are empty")
    return text


HF_KEYS = ("path", "name", "split", "column")
TEXT_TYPES = ("string", "large_string")


def read_hf_dataset(spec: Any) -> str:
    """`datasets` is imported only here: {path: a name or a save_to_disk directory, name, split, column}."""
    if not isinstance(spec, dict) or not spec.get("path"):
        raise ConfigError(f"data.hf_dataset: expected {{path: NAME_OR_DIR, name: null, split: train, column: text}}, "
                          f"got {spec!r}")
    unknown = [k for k in spec if k not in HF_KEYS]
    if unknown:
        raise ConfigError([f"data.hf_dataset.{k}: no such key{suggest(k, HF_KEYS)}; the keys are {', '.join(HF_KEYS)}"
                           for k in unknown])
    try:
        import datasets
    except ImportError:
        raise ConfigError("data.hf_dataset: needs the `datasets` package (pip install datasets)") from None
    path, split, column = spec["path"], spec.get("split") or "train", spec.get("column") or "text"
    local = Path(path).expanduser()
    if local.is_dir() and any((local / f).is_file() for f in ("dataset_info.json", "dataset_dict.json")):
        ds = datasets.load_from_disk(str(local))  # written by Dataset.save_to_disk or DatasetDict.save_to_disk
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ConfigError(f"data.hf_dataset.split: no split '{split}' in {path}{suggest(split, ds)}; "
                                  f"it has {', '.join(ds)}")
            ds = ds[split]
        elif spec.get("split") and ds.split is not None and str(ds.split) != split:
            raise ConfigError(f"data.hf_dataset.split: {path} holds the single split '{ds.split}', not '{split}'")
    else:
        ds = load_hub_dataset(datasets, path, spec.get("name"), split)
    if column not in ds.column_names:
        raise ConfigError(f"data.hf_dataset.column: no column '{column}'{suggest(column, ds.column_names)}; "
                          f"the data set has {', '.join(ds.column_names)}")
    kinds = {c: getattr(f, "dtype", None) or type(f).__name__ for c, f in ds.features.items()}
    if kinds[column] not in TEXT_TYPES:
        texts = [c for c, k in kinds.items() if k in TEXT_TYPES]
        others = (f"the text columns are {', '.join(texts)}" if texts else
                  "no column holds text (" + ", ".join(f"{c}: {k}" for c, k in kinds.items()) + ")")
        raise ConfigError(f"data.hf_dataset.column: column '{column}' holds {kinds[column]}, not text; {others}")
    rows = list(ds[column])
    nulls = sum(r is None for r in rows)
    if nulls:
        raise ConfigError(f"data.hf_dataset.column: {nulls} of {len(ds)} rows of column '{column}' are null; "
                          "drop them from the data set (Dataset.filter) first")
    text = "\n\n".join(rows)
    if not text.strip():
        raise ConfigError(f"data.hf_dataset: column '{column}' of {path} is empty")
    return text


def load_hub_dataset(datasets: Any, path: str, name: str | None, split: str) -> Any:
    """datasets.load_dataset, with an unknown split, configuration or data set as one line."""
    try:
        return datasets.load_dataset(path, name, split=split)
    except ValueError as e:
        found = re.search(r"Unknown split \"(.*?)\"\. Should be one of \[(.*)\]", str(e))
        if found:
            names = re.findall(r"'([^']*)'", found.group(2))
            raise ConfigError(f"data.hf_dataset.split: no split '{split}' in {path}{suggest(split, names)}; "
                              f"it has {', '.join(names)}") from None
        key = "data.hf_dataset.name" if "BuilderConfig" in str(e) or "config name" in str(e) else "data.hf_dataset"
        raise ConfigError(f"{key}: cannot load {path}: {first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - not found, no network, a broken script: one line, not a traceback
        raise ConfigError(f"data.hf_dataset.path: cannot load {path}: {first_line(e)}") from None


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:20]


def encode_to_file(tok: Tokenizer, text: str, file: Path) -> np.ndarray:
    """Token ids of `text` written to `file` (uint16 when the vocabulary allows), returned memory-mapped."""
    dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32
    if not file.is_file():
        ids = np.concatenate([np.asarray(c, dtype=dtype) for c in tok.encode_batch(chunks(text))] or [np.zeros(0, dtype)])
        tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
        ids.tofile(tmp)
        tmp.replace(file)  # atomic: a concurrent run never sees half a file
    return np.memmap(file, dtype=dtype, mode="r") if file.stat().st_size else np.zeros(0, dtype)


def chunks(text: str, size: int = 1 << 16) -> list[str]:
    """Pieces of ~size characters cut after a newline that precedes a non-space, where no token spans the cut,
    so that the tokenizer can encode them in parallel and give the same ids as for the whole text."""
    out, start = [], 0
    while start < len(text):
        cut = text.find("\n", start + size)
        while cut != -1 and cut + 1 < len(text) and text[cut + 1].isspace():
            cut = text.find("\n", cut + 1)
        end = len(text) if cut == -1 else cut + 1
        out.append(text[start:end])
        start = end
    return out


class Windows(Dataset):
    """(x, y) windows of `tokens`: x = tokens[s : s+T], y = tokens[s+1 : s+T+1], y = -100 before `scored[i]`."""

    def __init__(self, tokens: np.ndarray, block_size: int, starts: np.ndarray | None = None,
                 scored: np.ndarray | None = None):
        self.tokens, self.T = tokens, block_size
        self.starts, self.scored = starts, scored  # None: every start position (training)

    def __len__(self) -> int:
        return len(self.starts) if self.starts is not None else len(self.tokens) - self.T

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = int(self.starts[i]) if self.starts is not None else i
        chunk = torch.from_numpy(self.tokens[s:s + self.T + 1].astype(np.int64))  # (T+1,)
        x, y = chunk[:-1], chunk[1:].clone()
        if self.scored is not None and self.scored[i]:
            y[: self.scored[i]] = IGNORE  # targets an earlier window already scored
        return x, y


def validation_windows(n: int, T: int, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(starts, first scored target) covering targets 1..n-1 once; `limit` keeps that many, evenly spread."""
    starts = np.arange(0, n - T, T)  # full non-overlapping windows
    scored = np.zeros(len(starts), dtype=np.int64)
    covered = len(starts) * T  # targets 1..covered are scored
    if covered < n - 1:  # the tail: one window ending at the last token, scoring only the new targets
        starts = np.append(starts, n - 1 - T)
        scored = np.append(scored, T - (n - 1 - covered))
    if limit and len(starts) > limit:
        keep = np.linspace(0, len(starts) - 1, limit).round().astype(np.int64)
        starts, scored = starts[keep], scored[keep]
    return starts, scored


class TextData(L.LightningDataModule):
    def __init__(self, cfg: dict[str, Any], seed: int = 0):
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.block_size, self.batch_size = int(cfg["block_size"]), int(cfg["batch_size"])
        frac = float(cfg.get("val_fraction", 0.1))
        if not 0 < frac < 1:
            raise ConfigError(f"data.val_fraction: must be between 0 and 1 (exclusive), got {frac}")
        self.cache_dir = Path(cfg.get("cache_dir") or "outputs/cache/text").expanduser()
        self.text: str | None = None
        self.tokenizer: Tokenizer | None = None
        self.given: str | None = None  # where a tokenizer not trained on this text came from, for errors
        self.remedy = ""  # what to do when it cannot encode the text
        self.train_ids = self.val_ids = None

    # --- corpus and tokenizer (needed before the model exists: vocab_size) ------------------------------

    def corpus(self) -> tuple[str, str]:
        if self.text is None:
            self.text = read_corpus(self.cfg)
            self.cut = int(len(self.text) * (1 - float(self.cfg.get("val_fraction", 0.1))))
            self.text_key = digest(self.text)
        return self.text[: self.cut], self.text[self.cut:]

    def use_tokenizer(self, tokenizer: Tokenizer | str) -> None:
        """Encode with this tokenizer (a checkpoint's) instead of training or loading one."""
        self.tokenizer = Tokenizer.from_str(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self.given, self.remedy = "data.path: the model's tokenizer", "evaluate on text written in its alphabet"

    def get_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            spec = self.cfg.get("tokenizer") or {}
            if spec.get("path"):
                try:
                    self.tokenizer = Tokenizer.load(spec["path"])
                except (FileNotFoundError, ValueError) as e:
                    raise ConfigError(f"data.tokenizer.path: {e}") from None
                self.given = f"data.tokenizer.path: {spec['path']}"
                self.remedy = ("give a tokenizer that covers them (a byte-level BPE covers every character), leave "
                               "data.tokenizer.path unset to train one on this text, or remove them from the data")
            else:
                self.tokenizer = self.trained_tokenizer(spec.get("kind", "char"), int(spec.get("vocab_size", 4096)))
        return self.tokenizer

    def trained_tokenizer(self, kind: str, vocab_size: int) -> Tokenizer:
        train, _ = self.corpus()
        file = self.cache_dir / f"{self.text_key}-{self.cut}-{kind}{vocab_size if kind == 'bpe' else ''}.tokenizer.json"
        if file.is_file():
            return Tokenizer.load(file)
        try:
            tok = train_tokenizer(kind, train, self.text, vocab_size)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tok.save(file)
        return tok

    def model_sizes(self) -> dict[str, int]:
        """Sizes by role, for `auto` model variables (task.sizes says which variable takes which)."""
        self.setup()  # the corpus is tokenized now, so a text the tokenizer cannot encode fails before training
        return {"vocab": self.get_tokenizer().vocab_size}

    def check_alphabet(self, tok: Tokenizer) -> None:
        """A tokenizer not trained on this text must encode each of its characters."""
        missing = tok.missing(sorted(set(self.text)))
        if not missing:
            return
        raise ConfigError(f"{self.given} cannot encode {describe_missing(missing, self.text, 'of the corpus')}; "
                          f"{self.remedy}")

    # --- token arrays and loaders ------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.train_ids is not None:
            return
        tok = self.get_tokenizer()
        train, val = self.corpus()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        key = f"{self.text_key}-{self.cut}-{digest(tok.to_str())}"
        files = self.cache_dir / f"{key}.train.bin", self.cache_dir / f"{key}.val.bin"
        if self.given and not all(f.is_file() for f in files):  # cached arrays were checked when written
            self.check_alphabet(tok)
        try:
            self.train_ids = encode_to_file(tok, train, files[0])
            self.val_ids = encode_to_file(tok, val, files[1])
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - the tokenizers library raises bare Exceptions
            raise ConfigError(f"{self.given or 'data.tokenizer'} cannot encode the corpus: {first_line(e)}") from None
        for split, ids in (("training", self.train_ids), ("validation", self.val_ids)):
            if len(ids) < self.block_size + 1:
                raise ConfigError(f"data: the {split} split has {len(ids)} tokens, fewer than one window of "
                                  f"block_size + 1 = {self.block_size + 1}; use a longer text, a smaller "
                                  f"model.block_size or another data.val_fraction")

    def train_dataloader(self) -> DataLoader:
        ds = Windows(self.train_ids, self.block_size)
        # an "epoch" draws as many windows as fit in the split end to end; the run's seed fixes the draws
        per_epoch = max(self.batch_size, len(self.train_ids) // self.block_size)
        sampler = RandomSampler(ds, replacement=True, num_samples=per_epoch,
                                generator=torch.Generator().manual_seed(self.seed))
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                          num_workers=int(self.cfg.get("num_workers", 0)))

    def val_dataloader(self) -> DataLoader:
        starts, scored = validation_windows(len(self.val_ids), self.block_size, self.cfg.get("max_val_windows"))
        return DataLoader(Windows(self.val_ids, self.block_size, starts, scored),
                          batch_size=int(self.cfg.get("val_batch_size") or self.batch_size),
                          num_workers=int(self.cfg.get("num_workers", 0)))
