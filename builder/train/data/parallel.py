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
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from builder.errors import ConfigError
from builder.tokenizer import Tokenizer, describe_missing, first_line, read_json, train_tokenizer
from builder.pairs import encode_all, pad_batch, special_ids, tokenizers_from_str, with_specials

IGNORE = -100  # label at padded positions: skipped by cross_entropy
Pair = tuple[str, str]


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 file, without a leading byte-order mark or "\\r" of Windows line ends."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} "
                          f"({e.reason})") from None
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").split("\n")
    return lines[:-1] if lines and not lines[-1] else lines


def read_tsv(path: str | Path) -> list[Pair]:
    """(source, target) per non-empty line of `path`: 2 tab-separated columns, or 3 (the last ignored)."""
    pairs = []
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) not in (2, 3) or not cols[0].strip() or not cols[1].strip():
            raise ConfigError(f"{path}:{n}: expected 'source<TAB>target' (optionally <TAB>attribution), "
                              f"got {len(cols)} column(s): {line[:80]!r}")
        pairs.append((cols[0].strip(), cols[1].strip()))
    return pairs


def read_aligned(source: str | Path, target: str | Path) -> list[Pair]:
    """Line i of `source` with line i of `target`; both must have the same number of lines."""
    src, tgt = read_lines(source), read_lines(target)
    if len(src) != len(tgt):
        raise ConfigError(f"{source} has {len(src)} lines but {target} has {len(tgt)}; the files must be line-aligned")
    for n, (s, t) in enumerate(zip(src, tgt), start=1):
        if not s.strip() or not t.strip():
            where = source if not s.strip() else target
            raise ConfigError(f"{where}:{n}: empty line (the other file has text there); every line needs a sentence")
    return [(s.strip(), t.strip()) for s, t in zip(src, tgt)]


def read_split(spec: Any, key: str) -> list[Pair]:
    if isinstance(spec, str):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(f"data.{key}: file not found: {spec}")
        return read_tsv(path)
    if isinstance(spec, (list, tuple)) and len(spec) == 2:
        missing = [p for p in spec if not Path(p).expanduser().is_file()]
        if missing:
            raise ConfigError(f"data.{key}: file(s) not found: {', '.join(map(str, missing))}")
        return read_aligned(*(Path(p).expanduser() for p in spec))
    raise ConfigError(f"data.{key}: expected a TSV path or [source_file, target_file], got {spec!r}")


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
    """Train/val/test pairs, tokenizers (built from the training text) and bucketed loaders."""

    def __init__(self, cfg: dict[str, Any], seed: int = 0):
        super().__init__()
        self.cfg, self.shuffle_seed = cfg, seed
        self.pairs: dict[str, list[Pair]] | None = None
        self.ids: dict[str, list[tuple[list[int], list[int], str]]] = {}
        self.src_tok = self.tgt_tok = None

    # --- reading ---------------------------------------------------------------------------------------

    def read_pairs(self) -> dict[str, list[Pair]]:
        """{train, val, test} pairs in the file's direction (numbers.py overrides this)."""
        c = self.cfg
        if not c.get("train"):
            raise ConfigError("data.train: required: a TSV file or [source_file, target_file]")
        train = read_split(c["train"], "train")
        out = {split: read_split(c[split], split) for split in ("val", "test") if c.get(split)}
        held = [s for s in ("val", "test") if s not in out]
        if held:  # hold out of the training pairs, by a fixed shuffle
            sizes = {s: int(c.get(f"{s}_size", 1000)) for s in held}
            if sum(sizes.values()) >= len(train):
                raise ConfigError(f"data.train: {len(train)} pairs cannot spare {sum(sizes.values())} for "
                                  f"{' and '.join(held)}; lower data.val_size / data.test_size or give the files")
            order = list(range(len(train)))
            random.Random(int(c.get("seed", 0))).shuffle(order)
            start = 0
            for s in held:
                out[s] = [train[i] for i in order[start:start + sizes[s]]]
                start += sizes[s]
            train = [train[i] for i in sorted(order[start:])]
        out["train"] = train
        return out

    def prepare(self) -> None:
        """Read, orient and tokenize everything once (model_sizes needs the vocabulary before setup)."""
        if self.pairs is not None:
            return
        pairs = self.read_pairs()
        if self.cfg.get("reverse"):
            pairs = {k: [(t, s) for s, t in v] for k, v in pairs.items()}
        self.pairs = pairs
        self.src_tok, self.tgt_tok = self.build_tokenizers(pairs)
        for split, ps in pairs.items():
            self.ids[split] = self.encode(ps, split)

    def build_tokenizers(self, pairs: dict[str, list[Pair]]) -> tuple[Tokenizer, Tokenizer]:
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
        every = [p for ps in pairs.values() for p in ps]  # a char alphabet covers val/test characters too

        def make(side: list[int]) -> Tokenizer:
            text = lambda ps: "\n".join(p[i] for p in ps for i in side)  # noqa: E731
            return with_specials(train_tokenizer(kind, text(pairs["train"]), text(every), vocab))

        if t.get("shared"):
            tok = make([0, 1])
            return tok, tok
        return make([0]), make([1])

    def encode(self, pairs: list[Pair], split: str) -> list[tuple[list[int], list[int], str]]:
        """Token ids of each pair, without pairs longer than data.max_src_len / data.max_tgt_len tokens."""
        src = self.encode_side(self.src_tok, [s for s, _ in pairs], "source")
        tgt = self.encode_side(self.tgt_tok, [t for _, t in pairs], "target")
        max_src, max_tgt = int(self.cfg.get("max_src_len", 256)), int(self.cfg.get("max_tgt_len", 256))
        kept = [(s, t, p[1]) for s, t, p in zip(src, tgt, pairs) if 0 < len(s) <= max_src and 0 < len(t) <= max_tgt]
        if len(kept) < len(pairs):
            print(f"{self.cfg.get('name', 'data')}: {split}: dropped {len(pairs) - len(kept)} of {len(pairs)} pairs "
                  f"longer than max_src_len={max_src} / max_tgt_len={max_tgt} tokens")
        return kept

    def encode_side(self, tok: Tokenizer, texts: list[str], side: str) -> list[list[int]]:
        try:
            return encode_all(tok, texts)
        except Exception as e:  # noqa: BLE001 - a given tokenizer that lacks characters of the data
            text = "\n".join(texts)
            missing = tok.missing(sorted(set().union(*texts)))
            why = (describe_missing(missing, text, f"of the {side} sentences") if missing
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
        sampler = BucketSampler([len(s) + len(t) for s, t, _ in items], bs, shuffle, self.shuffle_seed,
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
