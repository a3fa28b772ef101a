"""Text for language modelling: a corpus -> tokenizer -> token ids cached as memory-mapped arrays -> windows.

The corpus (corpus.py) is `data.path` (a UTF-8 file, or every file under a directory or matching a glob, in
sorted order), a Hugging Face `datasets` source (`data.hf_dataset`), or by default the text of CPython's own
`pydoc_data.topics` (~465 KB), so a fresh machine trains with no download. The last `val_fraction` of its
bytes is the validation split. It is never held whole: a character tokenizer's alphabet comes from one pass
over the whole corpus, BPE merges from one pass over the training split (at most `tokenizer.train_bytes` of
it), and one more pass encodes both splits BATCH characters at a time, appending the ids to files under
`cache_dir` that are renamed into place once complete. The cache is keyed by the corpus key (corpus.py),
the split and the tokenizer.

Training draws random contiguous windows of block_size + 1 tokens (input and shifted target). Validation
covers the whole split with fixed non-overlapping windows; a last window aligned to the end scores only the
targets the others missed (earlier ones are -100, ignored), so every validation token counts exactly once.
Loader workers (`num_workers`) each open the memory-mapped arrays themselves.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from builder.errors import ConfigError
from builder.tokenizer import (Tokenizer, alphabet_tokenizer, byte_cap, check_kind, count_chars, describe_missing,
                               first_line, train_tokenizer)
from builder.train.data.corpus import (BLOCK, Corpus, default_text, digest, find_path, open_corpus, rebatch,
                                      separator_of)
from builder.train.data.hf_corpus import open_hf_dataset
from builder.train.data.special import with_special_tokens

__all__ = ["TextData", "Windows", "validation_windows", "default_text", "find_path"]
IGNORE = -100  # cross_entropy's ignore_index
BATCH = BLOCK  # characters encoded at a time


class Windows(Dataset):
    """(x, y) windows of `tokens`: x = tokens[s : s+T], y = tokens[s+1 : s+T+1], y = -100 before `scored[i]`.
    Pickled (for a loader worker), a memory-mapped array travels as its file name and is opened again."""

    def __init__(self, tokens: np.ndarray, block_size: int, starts: np.ndarray | None = None,
                 scored: np.ndarray | None = None):
        self.tokens, self.T = tokens, block_size
        self.starts, self.scored = starts, scored  # None: every start position (training)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(self.tokens, np.memmap):
            state["tokens"] = (self.tokens.filename, self.tokens.dtype.str)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if isinstance(self.tokens, tuple):
            self.tokens = np.memmap(self.tokens[0], dtype=np.dtype(self.tokens[1]), mode="r")

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


def temporary(file: Path) -> Path:
    """A file to write `file` into before renaming it; those left by processes that died are removed."""
    for old in file.parent.glob(f"{file.name}.*.tmp"):
        try:
            os.kill(int(old.name.split(".")[-2]), 0)
        except (ProcessLookupError, ValueError):
            old.unlink(missing_ok=True)
        except PermissionError:
            pass
    return file.with_name(f"{file.name}.{os.getpid()}.tmp")


def write_then_rename(file: Path, write: Callable[[Path], Any]) -> None:
    """`write(path)` into a temporary file, renamed to `file` once complete: a reader never sees it half written."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(file)
    try:
        write(tmp)
        tmp.replace(file)
    finally:
        tmp.unlink(missing_ok=True)


def token_array(file: Path, dtype: Any) -> np.ndarray:
    return np.memmap(file, dtype=dtype, mode="r") if file.stat().st_size else np.zeros(0, dtype)


class TextData(L.LightningDataModule):
    def __init__(self, cfg: dict[str, Any], seed: int = 0):
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.block_size, self.batch_size = int(cfg["block_size"]), int(cfg["batch_size"])
        self.frac = float(cfg.get("val_fraction", 0.1))
        if not 0 < self.frac < 1:
            raise ConfigError(f"data.val_fraction: must be between 0 and 1 (exclusive), got {self.frac}")
        self.cache_dir = Path(cfg.get("cache_dir") or "outputs/cache/text").expanduser()
        self.corpus: Corpus | None = None
        self.cut = 0  # the byte offset where validation starts
        self.tokenizer: Tokenizer | None = None
        self.given: str | None = None  # where a tokenizer not trained on this text came from, for errors
        self.remedy = ""  # what to do when it cannot encode the text
        self.train_ids = self.val_ids = None

    # --- corpus and tokenizer (needed before the model exists: vocab_size) ------------------------------

    def get_corpus(self) -> Corpus:
        if self.corpus is None:
            if self.cfg.get("hf_dataset"):  # `datasets` is imported only for such a source
                corpus = open_hf_dataset(self.cfg["hf_dataset"], separator_of(self.cfg))
            else:
                corpus = open_corpus(self.cfg)
            size = corpus.known_size()
            if size is None:  # a streamed data set: measured once, remembered beside the token arrays
                file = self.cache_dir / f"{corpus.key}.size"
                if file.is_file():
                    size = corpus.measured = int(file.read_text())
                else:
                    size = corpus.scan("measuring the data set")[0]
                    write_then_rename(file, lambda tmp: tmp.write_text(str(size)))
            if not size:
                raise ConfigError(corpus.empty)
            self.corpus, self.cut = corpus, int(size * (1 - self.frac))
        return self.corpus

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
                self.tokenizer = self.trained_tokenizer(spec.get("kind", "char"), int(spec.get("vocab_size", 4096)),
                                                        spec.get("train_bytes"))
            if spec.get("special_tokens"):  # a task's own tokens (masked_lm: [PAD], [CLS], [SEP], [MASK])
                self.tokenizer = with_special_tokens(self.tokenizer, spec["special_tokens"])
        return self.tokenizer

    def trained_tokenizer(self, kind: str, vocab_size: int, train_bytes: Any = None) -> Tokenizer:
        try:
            check_kind(kind)
            cap = byte_cap(train_bytes) if kind == "bpe" else None
        except ValueError as e:
            raise ConfigError(str(e)) from None
        corpus = self.get_corpus()
        name = f"{kind}{vocab_size}" + (f"-{cap}" if cap else "") if kind == "bpe" else kind
        file = self.cache_dir / f"{corpus.key}-{self.cut}-{name}.tokenizer.json"
        if file.is_file():
            return Tokenizer.load(file)
        if kind == "char":
            tok = alphabet_tokenizer(corpus.scan("reading the alphabet")[1])
        else:
            stop = self.cut if cap is None else min(cap, self.cut)
            tok = train_tokenizer("bpe", corpus.texts(self.cut, part=0, stop=stop, desc="training BPE"), "", vocab_size)
        write_then_rename(file, tok.save)
        return tok

    def model_sizes(self) -> dict[str, int]:
        """Sizes by role, for `auto` model variables (task.sizes says which variable takes which)."""
        self.setup()  # the corpus is tokenized now, so a text the tokenizer cannot encode fails before training
        return {"vocab": self.get_tokenizer().vocab_size}

    def check_alphabet(self, tok: Tokenizer, chars: set[str]) -> None:
        """A tokenizer not trained on this text must encode each of its characters."""
        missing = tok.missing(sorted(chars))
        if missing:
            counts = count_chars(self.corpus.texts(), missing)
            raise ConfigError(f"{self.given} cannot encode {describe_missing(missing, counts, 'of the corpus')}; "
                              f"{self.remedy}")

    # --- token arrays and loaders ------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.train_ids is not None:
            return
        tok = self.get_tokenizer()
        corpus = self.get_corpus()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        key = f"{corpus.key}-{self.cut}-{digest(tok.to_str())}"
        files = self.cache_dir / f"{key}.train.bin", self.cache_dir / f"{key}.val.bin"
        dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32
        if not all(f.is_file() for f in files):  # cached arrays were complete and checked when written
            self.tokenize(tok, files, dtype)
        self.train_ids, self.val_ids = (token_array(f, dtype) for f in files)
        for split, ids in (("training", self.train_ids), ("validation", self.val_ids)):
            if len(ids) < self.block_size + 1:
                raise ConfigError(f"data: the {split} split has {len(ids)} tokens, fewer than one window of "
                                  f"block_size + 1 = {self.block_size + 1}; use a longer text, a smaller "
                                  f"model.block_size or another data.val_fraction")

    def batches(self, tok: Tokenizer) -> Iterator[tuple[int, str]]:
        """(part, text) of about BATCH characters each, cut where the tokenizer gives the ids of the whole."""
        pieces = self.corpus.read(self.cut, desc="tokenizing")
        for part, group in itertools.groupby(pieces, key=lambda p: p[0]):
            for text in rebatch((t for _, t in group), BATCH, tok.safe_end):
                yield part, text

    def tokenize(self, tok: Tokenizer, files: tuple[Path, Path], dtype: Any) -> None:
        """Both splits' ids appended batch by batch to temporary files, renamed once all is written."""
        tmps = [temporary(f) for f in files]
        chars: set[str] = set()
        has_text = False
        try:
            with open(tmps[0], "wb") as train, open(tmps[1], "wb") as val:
                for part, text in self.batches(tok):
                    if self.given:
                        chars.update(text)
                    has_text = has_text or not text.isspace()
                    try:
                        ids = tok.encode_array(text, dtype)
                    except Exception as e:  # noqa: BLE001 - the tokenizers library raises bare Exceptions
                        if self.given:
                            self.check_alphabet(tok, self.corpus.scan()[1])
                        raise ConfigError(f"{self.given or 'data.tokenizer'} cannot encode the corpus: "
                                          f"{first_line(e)}") from None
                    ids.tofile(val if part else train)
            if not has_text:
                raise ConfigError(self.corpus.empty)
            if self.given:
                self.check_alphabet(tok, chars)
            for tmp, file in zip(tmps, files):
                tmp.replace(file)
        finally:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)

    def loader(self, ds: Dataset, batch_size: int, **kw: Any) -> DataLoader:
        workers = int(self.cfg.get("num_workers") or 0)
        return DataLoader(ds, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0, **kw)

    def train_dataloader(self) -> DataLoader:
        ds = Windows(self.train_ids, self.block_size)
        # an "epoch" draws as many windows as fit in the split end to end; the run's seed fixes the draws
        per_epoch = max(self.batch_size, len(self.train_ids) // self.block_size)
        sampler = RandomSampler(ds, replacement=True, num_samples=per_epoch,
                                generator=torch.Generator().manual_seed(self.seed))
        return self.loader(ds, self.batch_size, sampler=sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        starts, scored = validation_windows(len(self.val_ids), self.block_size, self.cfg.get("max_val_windows"))
        return self.loader(Windows(self.val_ids, self.block_size, starts, scored),
                           int(self.cfg.get("val_batch_size") or self.batch_size))
