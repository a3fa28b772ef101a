"""Labelled texts for sequence classification: a TSV of `label<TAB>text` lines (data.path).

Validation is data.val_path, or else a data.val_fraction of the lines drawn with data.seed. The classes are
data.classes, or else the sorted labels of the training lines (then written into data.classes, so the run's
config.yaml and checkpoints name them). Texts are encoded with the tokenizer's special tokens ("[CLS] text
[SEP]"), cut to data.max_len tokens and padded per batch with [PAD]; a batch is (ids (B, T), attention_mask
(B, T): 1 at tokens, 0 at padding, target (B,)). The tokenizer is data.tokenizer.path (a tokenizer.json, or a
directory holding one: a run, an export, a Hugging Face BERT directory) or one trained on the training texts
(char or bpe); the special tokens it lacks (data.tokenizer.special_tokens) are added.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from builder.config import CONF_DIR
from builder.errors import ConfigError
from builder.tokenizer import Tokenizer, alphabet_tokenizer, bpe_tokenizer, check_kind
from builder.train.data.special import BERT_TOKENS, check_characters, encode_texts, token_id, with_special_tokens


def find(path: str, where: str) -> Path:
    """A relative path is looked up in the working directory, then in the project root (where conf/ is)."""
    p = Path(path).expanduser()
    for candidate in [p] if p.is_absolute() else [p, CONF_DIR.parent / p]:
        if candidate.exists():
            return candidate
    raise ConfigError(f"{where}: {path} does not exist")


def read_tsv(path: Path, where: str) -> list[tuple[str, str]]:
    """(label, text) of each non-empty line; a line without a tab is a one-line error naming file and line."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            label, tab, text = line.partition("\t")
            if not tab or not label.strip():
                raise ConfigError(f"{where}: {path} line {n}: expected label<TAB>text, got {line[:60]!r}")
            rows.append((label.strip(), text))
    if not rows:
        raise ConfigError(f"{where}: {path} holds no label<TAB>text lines")
    return rows


class TextClassesData(L.LightningDataModule):
    def __init__(self, cfg: dict[str, Any], seed: int = 0):
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.batch_size = int(cfg.get("batch_size", 32))
        self.max_len = cfg.get("max_len")
        self.tokenizer: Tokenizer | None = None
        self.train_rows = self.val_rows = None
        self.train_set = self.val_set = None

    def file(self, key: str) -> Path:
        if not self.cfg.get(key):
            raise ConfigError(f"data.{key}: required, a TSV of label<TAB>text lines")
        return find(self.cfg[key], f"data.{key}")

    def rows(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(training rows, validation rows), read once; the classes are fixed here."""
        if self.train_rows is None:
            rows = read_tsv(self.file("path"), "data.path")
            if self.cfg.get("val_path"):
                train, val = rows, read_tsv(self.file("val_path"), "data.val_path")
            else:
                n_val = max(1, round(len(rows) * float(self.cfg.get("val_fraction", 0.1))))
                if n_val >= len(rows):
                    raise ConfigError(f"data.val_fraction: leaves no training lines of the {len(rows)} in data.path")
                order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(int(self.cfg.get("seed", 0))))
                held = set(order[:n_val].tolist())
                train = [r for i, r in enumerate(rows) if i not in held]
                val = [r for i, r in enumerate(rows) if i in held]
            if not self.cfg.get("classes"):
                self.cfg["classes"] = sorted({label for label, _ in train})  # recorded in the run's config
            unknown = sorted({label for label, _ in train + val} - set(self.cfg["classes"]))
            if unknown:
                raise ConfigError(f"data.classes: label(s) {unknown} of the data are not among {self.cfg['classes']}")
            self.train_rows, self.val_rows = train, val
        return self.train_rows, self.val_rows

    def use_tokenizer(self, tokenizer: Tokenizer | str) -> None:
        """Encode with this tokenizer (a checkpoint's) instead of training or loading one."""
        self.tokenizer = Tokenizer.from_str(tokenizer) if isinstance(tokenizer, str) else tokenizer

    def get_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            spec = self.cfg.get("tokenizer") or {}
            if spec.get("path"):
                try:
                    tok = Tokenizer.load(find(spec["path"], "data.tokenizer.path"))
                except (FileNotFoundError, ValueError) as e:
                    raise ConfigError(f"data.tokenizer.path: {e}") from None
            else:
                kind = spec.get("kind", "char")
                try:
                    check_kind(kind)
                except ValueError as e:
                    raise ConfigError(str(e)) from None
                texts = [text for _, text in self.rows()[0]]
                tok = (alphabet_tokenizer({c for t in texts + [t for _, t in self.rows()[1]] for c in t})
                       if kind == "char" else bpe_tokenizer(texts, int(spec.get("vocab_size", 1000))))
            self.tokenizer = with_special_tokens(tok, spec.get("special_tokens") or BERT_TOKENS)
        return self.tokenizer

    def model_sizes(self) -> dict[str, int]:
        """Sizes by role, for `auto` model variables: the vocabulary and the number of classes."""
        self.setup()
        return {"vocab": self.get_tokenizer().vocab_size, "classes": len(self.cfg["classes"])}

    def encode(self, rows: list[tuple[str, str]], where: str) -> list[tuple[torch.Tensor, int]]:
        tok = self.get_tokenizer()
        texts = [text for _, text in rows]
        try:
            check_characters(tok, texts, where)
            pad = token_id(tok, (self.cfg.get("tokenizer") or {}).get("pad_token") or "[PAD]", "data.tokenizer")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        ids, mask = encode_texts(tok, texts, self.max_len, pad)
        classes = self.cfg["classes"]
        return [(ids[i, :int(mask[i].sum())], classes.index(label)) for i, (label, _) in enumerate(rows)]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            train, val = self.rows()
            self.train_set, self.val_set = self.encode(train, "data.path"), self.encode(val, "data.val_path")

    def collate(self, items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pad = self.get_tokenizer().tok.token_to_id((self.cfg.get("tokenizer") or {}).get("pad_token") or "[PAD]")
        width = max(len(ids) for ids, _ in items)
        ids = torch.full((len(items), width), pad, dtype=torch.long)  # (B, T)
        mask = torch.zeros(len(items), width, dtype=torch.long)  # (B, T): 1 at tokens
        for i, (row, _) in enumerate(items):
            ids[i, :len(row)], mask[i, :len(row)] = row, 1
        return ids, mask, torch.tensor([label for _, label in items])

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)  # the shuffling order depends only on the run's seed
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=g,
                          collate_fn=self.collate, num_workers=int(self.cfg.get("num_workers") or 0))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=int(self.cfg.get("val_batch_size") or self.batch_size),
                          collate_fn=self.collate)
