"""Parallel text for translation: (source, target) sentence pairs -> padded, length-bucketed batches.

A split is a TSV file (source TAB target per line; a third column, such as Tatoeba's attribution, is
ignored) or a list of two line-aligned files [source_file, target_file]. Validation and test pairs come
from their own files, or are held out of the training pairs (fixed by `data.seed`). `reverse: true`
swaps the sides (de->en from an en->de file).

Each side has a tokenizer (char or bpe, from builder.tokenizer), or both share one; the special tokens
<pad> <s> </s> are added to it. A batch is a dict:
    src (B, S) long, src_pad (B, S) bool, tgt_in (B, T) = <s> y, tgt_pad (B, T) bool,
    labels (B, T) = y </s> with -100 at padding, refs: the target sentences (for metrics on decoded text).
"""
from __future__ import annotations

import random
from array import array
from pathlib import Path
from typing import Any, Iterable, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from builder.errors import ConfigError
from builder.tokenizer import Tokenizer, alphabet, count_chars, describe_missing, first_line, read_json, train_tokenizer
from builder.pairs import pad_batch, special_ids, tokenizers_from_str, with_specials
from builder.train.data.pair_files import (EncodedPairs, Kept, Pair, PairFile, Swapped, batched, encode_flat,
                                           read_aligned, read_lines, read_tsv)

__all__ = ["ParallelData", "BucketSampler", "collate", "read_aligned", "read_lines", "read_tsv"]

IGNORE = -100  # label at padded positions: skipped by cross_entropy
BATCH = 4096  # pairs read and encoded at a time


class BucketSampler(Sampler[list[int]]):
    """Batches of similar length: shuffle, sort within pools of `pool` batches, then shuffle the batches.

    Less padding than random batches, still a different mix every epoch (`set_epoch`, called by Lightning)."""

    def __init__(self, lengths: list[int], batch_size: int, shuffle: bool, seed: int = 0, pool: int = 50):
        self.lengths, self.batch_size, self.shuffle, self.seed, self.pool = lengths, batch_size, shuffle, seed, pool
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        idx = list(range(len(self.lengths)))
        if not self.shuffle:  # evaluation: one sorted pass, decoding wastes least on padding
            idx.sort(key=lambda i: self.lengths[i])
            return [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        rng = random.Random(self.seed * 100_003 + self.epoch)
        rng.shuffle(idx)
        size = self.batch_size * self.pool
        out = []
        for start in range(0, len(idx), size):
            chunk = sorted(idx[start:start + size], key=lambda i: self.lengths[i])
            out += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(out)
        return out

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


class ParallelData(L.LightningDataModule):
    """Train/val/test pairs, tokenizers (built from the training text) and bucketed loaders. Files are read
    and encoded BATCH pairs at a time; what stays is the ids, in flat arrays."""

    def __init__(self, cfg: dict[str, Any], seed: int = 0):
        super().__init__()
        self.cfg, self.shuffle_seed = cfg, seed
        self.pairs: dict[str, Iterable[Pair]] | None = None
        self.ids: dict[str, EncodedPairs] = {}
        self.src_tok = self.tgt_tok = None

    # --- reading ---------------------------------------------------------------------------------------

    def read_pairs(self) -> dict[str, Iterable[Pair]]:
        """{train, val, test} pairs in the file's direction, each an iterable with a length that can be read
        again (numbers.py overrides this with lists)."""
        c = self.cfg
        if not c.get("train"):
            raise ConfigError("data.train: required: a TSV file or [source_file, target_file]")
        train = PairFile(c["train"], "train")
        out: dict[str, Iterable[Pair]] = {split: PairFile(c[split], split) for split in ("val", "test") if c.get(split)}
        held = [s for s in ("val", "test") if s not in out]
        if held:  # hold out of the training pairs, by a fixed shuffle
            sizes = {s: int(c.get(f"{s}_size", 1000)) for s in held}
            n = len(train)
            if sum(sizes.values()) >= n:
                raise ConfigError(f"data.train: {n} pairs cannot spare {sum(sizes.values())} for "
                                  f"{' and '.join(held)}; lower data.val_size / data.test_size or give the files")
            order = array("q", range(n))  # 8 bytes a pair; the same shuffle as a list's
            random.Random(int(c.get("seed", 0))).shuffle(order)
            mark, where, start = np.zeros(n, np.int8), {}, 0
            for k, s in enumerate(held, start=1):
                for j, i in enumerate(order[start:start + sizes[s]]):
                    mark[i], where[i] = k, (s, j)
                start += sizes[s]
            del order
            picked: dict[str, list[Any]] = {s: [None] * sizes[s] for s in held}
            for i, pair in enumerate(train):  # held-out pairs in the shuffled order
                if mark[i]:
                    s, j = where[i]
                    picked[s][j] = pair
            out.update(picked)
            train = Kept(train, mark, 0)
        out["train"] = train
        return out

    def prepare(self) -> None:
        """Read, orient and tokenize everything once (model_sizes needs the vocabulary before setup)."""
        if self.pairs is not None:
            return
        pairs = self.read_pairs()
        if self.cfg.get("reverse"):
            pairs = {k: [(t, s) for s, t in v] if isinstance(v, list) else Swapped(v) for k, v in pairs.items()}
        self.pairs = pairs
        self.src_tok, self.tgt_tok = self.build_tokenizers(pairs)
        for split, ps in pairs.items():
            self.ids[split] = self.encode(ps, split)

    def build_tokenizers(self, pairs: dict[str, Iterable[Pair]]) -> tuple[Tokenizer, Tokenizer]:
        t = self.cfg.get("tokenizer") or {}
        if t.get("path"):  # a tokenizer.json: one for both sides, or a previous seq2seq run's pair
            path = Path(t["path"]).expanduser()
            if not path.is_file():
                raise ConfigError(f"data.tokenizer.path: file not found: {t['path']}")
            try:
                src, tgt = tokenizers_from_str(read_json(path)[0])
            except ValueError as e:
                raise ConfigError(f"data.tokenizer.path: {e}") from None
            except Exception as e:  # noqa: BLE001 - the tokenizers library raises bare Exceptions
                raise ConfigError(f"data.tokenizer.path: {path} is not a tokenizer.json: {first_line(e)}") from None
            return with_specials(src), (with_specials(tgt) if tgt is not src else src)
        kind, vocab = t.get("kind", "char"), int(t.get("vocab_size", 8000))

        def texts(splits: list[Iterable[Pair]], side: list[int]) -> Iterator[str]:
            for ps in splits:
                for batch in batched(ps, BATCH):
                    yield "\n".join(p[i] for p in batch for i in side)

        def make(side: list[int]) -> Tokenizer:  # a char alphabet covers val/test characters too
            return with_specials(train_tokenizer(kind, texts([pairs["train"]], side), texts(list(pairs.values()), side),
                                                 vocab))

        if t.get("shared"):
            tok = make([0, 1])
            return tok, tok
        return make([0]), make([1])

    def encode(self, pairs: Iterable[Pair], split: str) -> EncodedPairs:
        """Token ids of each pair, without pairs longer than data.max_src_len / data.max_tgt_len tokens."""
        max_src, max_tgt = int(self.cfg.get("max_src_len", 256)), int(self.cfg.get("max_tgt_len", 256))
        vocab = max(self.src_tok.vocab_size, self.tgt_tok.vocab_size)
        out = EncodedPairs(np.uint16 if vocab <= 1 << 16 else np.uint32, self.tgt_tok, keep_refs=split != "train")
        total = 0
        for batch in batched(pairs, BATCH):
            src, src_len = self.encode_side(self.src_tok, [s for s, _ in batch], pairs, 0, out.dtype)
            tgt, tgt_len = self.encode_side(self.tgt_tok, [t for _, t in batch], pairs, 1, out.dtype)
            keep = (src_len > 0) & (src_len <= max_src) & (tgt_len > 0) & (tgt_len <= max_tgt)
            out.add(src, src_len, tgt, tgt_len, keep, [t for _, t in batch])
            total += len(batch)
        out.finish()
        if len(out) < total:
            print(f"{self.cfg.get('name', 'data')}: {split}: dropped {total - len(out)} of {total} pairs "
                  f"longer than max_src_len={max_src} / max_tgt_len={max_tgt} tokens")
        return out

    def encode_side(self, tok: Tokenizer, texts: list[str], pairs: Iterable[Pair], i: int,
                    dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        try:
            return encode_flat(tok, texts, dtype)
        except Exception as e:  # noqa: BLE001 - a given tokenizer that lacks characters of the data
            side = ("source", "target")[i]
            sentences = lambda: (p[i] for p in pairs)  # noqa: E731 - the whole split's side, read again
            missing = tok.missing(sorted(alphabet(sentences())))
            why = (describe_missing(missing, count_chars(sentences(), missing), f"of the {side} sentences") if missing
                   else f"the {side} sentences: {first_line(e)}")
            path = (self.cfg.get("tokenizer") or {}).get("path")
            where = f"data.tokenizer.path: {path}" if path else "data.tokenizer"
            raise ConfigError(f"{where} cannot encode {why}; give a tokenizer that covers them, or leave "
                              "data.tokenizer.path unset to train one on this data") from None

    def model_sizes(self) -> dict[str, int]:
        """Sizes by role, for `auto` model variables (task.sizes says which variable takes which)."""
        self.prepare()
        return {"source_vocab": self.src_tok.vocab_size, "target_vocab": self.tgt_tok.vocab_size}

    def get_tokenizers(self) -> tuple[Tokenizer, Tokenizer]:
        """(source, target) tokenizers; the same object twice when shared."""
        self.prepare()
        return self.src_tok, self.tgt_tok

    # --- batches ---------------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def collate(self, items: list[tuple[list[int], list[int], str]]) -> dict[str, Any]:
        return collate(items, self.src_tok, self.tgt_tok)

    def loader(self, split: str, shuffle: bool) -> DataLoader:
        items = self.ids[split]
        bs = int(self.cfg.get("batch_size", 64)) * (1 if shuffle else int(self.cfg.get("eval_batch_mult", 4)))
        sampler = BucketSampler(items.lengths().tolist(), bs, shuffle, self.shuffle_seed,
                                int(self.cfg.get("bucket_pool", 50)))
        return DataLoader(items, batch_sampler=sampler, collate_fn=self.collate)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", shuffle=False)


def collate(items: list[tuple[list[int], list[int], str]], src_tok: Tokenizer, tgt_tok: Tokenizer) -> dict[str, Any]:
    """Teacher forcing: the decoder reads <s> y and predicts y </s> (the same sequence shifted by one)."""
    src_pad_id = special_ids(src_tok)[0]
    pad, bos, eos = special_ids(tgt_tok)
    src, src_pad = pad_batch([s for s, _, _ in items], src_pad_id)  # (B, S)
    tgt_in, tgt_pad = pad_batch([[bos] + t for _, t, _ in items], pad)  # (B, T)
    labels = torch.full_like(tgt_in, IGNORE)
    for i, (_, t, _) in enumerate(items):
        labels[i, :len(t) + 1] = torch.tensor(t + [eos], dtype=torch.long)
    return {"src": src, "src_pad": src_pad, "tgt_in": tgt_in, "tgt_pad": tgt_pad, "labels": labels,
            "refs": [r for _, _, r in items]}
