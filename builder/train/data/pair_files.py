"""Parallel text files read line by line (never held whole), and encoded pairs kept as flat id arrays."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from builder.errors import ConfigError
from builder.pairs import target_text
from builder.tokenizer import Tokenizer, lookup

Pair = tuple[str, str]


def lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(number, line) of a UTF-8 file read line by line, without a leading byte-order mark or the "\\r" of
    Windows line ends."""
    with open(path, "rb") as f:
        offset = 0
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(f"{path}: not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {offset + e.start} "
                                  f"({e.reason})") from None
            if n == 1:
                line = line.removeprefix("\ufeff")
            if line.endswith("\n"):
                line = line[:-2] if line.endswith("\r\n") else line[:-1]
            offset += len(raw)
            yield n, line


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 file, without a leading byte-order mark or "\\r" of Windows line ends."""
    return [line for _, line in lines(path)]


def count_lines(path: str | Path) -> int:
    """How many lines read_lines finds, by counting newlines block by block."""
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            count, last = count + block.count(b"\n"), block[-1:]
    return count + (last != b"\n")


def tsv_pairs(path: str | Path) -> Iterator[Pair]:
    """(source, target) per non-empty line of `path`: 2 tab-separated columns, or 3 (the last ignored)."""
    for n, line in lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) not in (2, 3) or not cols[0].strip() or not cols[1].strip():
            raise ConfigError(f"{path}:{n}: expected 'source<TAB>target' (optionally <TAB>attribution), "
                              f"got {len(cols)} column(s): {line[:80]!r}")
        yield cols[0].strip(), cols[1].strip()


def aligned_pairs(source: str | Path, target: str | Path) -> Iterator[Pair]:
    """Line i of `source` with line i of `target`; both must have the same number of lines."""
    n_src, n_tgt = count_lines(source), count_lines(target)
    if n_src != n_tgt:
        raise ConfigError(f"{source} has {n_src} lines but {target} has {n_tgt}; the files must be line-aligned")
    for (n, s), (_, t) in zip(lines(source), lines(target)):
        if not s.strip() or not t.strip():
            where = source if not s.strip() else target
            raise ConfigError(f"{where}:{n}: empty line (the other file has text there); every line needs a sentence")
        yield s.strip(), t.strip()


def read_tsv(path: str | Path) -> list[Pair]:
    return list(tsv_pairs(path))


def read_aligned(source: str | Path, target: str | Path) -> list[Pair]:
    return list(aligned_pairs(source, target))


class PairFile:
    """The pairs of a split's files (a TSV path or [source_file, target_file]), read line by line each time
    they are iterated, so that no split is ever held whole."""

    def __init__(self, spec: Any, key: str):
        if isinstance(spec, str):
            if not Path(spec).expanduser().is_file():
                raise ConfigError(f"data.{key}: file not found: {spec}")
        elif isinstance(spec, (list, tuple)) and len(spec) == 2:
            missing = [p for p in spec if not Path(p).expanduser().is_file()]
            if missing:
                raise ConfigError(f"data.{key}: file(s) not found: {', '.join(map(str, missing))}")
        else:
            raise ConfigError(f"data.{key}: expected a TSV path or [source_file, target_file], got {spec!r}")
        self.spec, self.count = spec, None

    def __iter__(self) -> Iterator[Pair]:
        if isinstance(self.spec, str):
            return tsv_pairs(Path(self.spec).expanduser())
        return aligned_pairs(*(Path(p).expanduser() for p in self.spec))

    def __len__(self) -> int:
        if self.count is None:
            self.count = sum(1 for _ in self)
        return self.count


class Kept:
    """The pairs of `pairs` at the positions where `mark` equals `value`, in file order."""

    def __init__(self, pairs: Iterable[Pair], mark: np.ndarray, value: int):
        self.pairs, self.mark, self.value = pairs, mark, value

    def __iter__(self) -> Iterator[Pair]:
        return (p for i, p in enumerate(self.pairs) if self.mark[i] == self.value)

    def __len__(self) -> int:
        return int((self.mark == self.value).sum())


class Swapped:
    """The pairs of `pairs` with source and target exchanged."""

    def __init__(self, pairs: Iterable[Pair]):
        self.pairs = pairs

    def __iter__(self) -> Iterator[Pair]:
        return ((t, s) for s, t in self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)


def encode_flat(tok: Tokenizer, texts: list[str], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """(ids end to end, tokens per text); a character tokenizer maps each character through its vocabulary (as
    builder.pairs.encode_all does), any other encodes the texts as a batch."""
    if tok.kind == "char":
        return lookup(tok.vocab_table(), "".join(texts), dtype), np.array([len(t) for t in texts], np.int64)
    seqs = tok.encode_batch(texts)
    return (np.fromiter(itertools.chain.from_iterable(seqs), dtype),
            np.array([len(s) for s in seqs], np.int64))


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


class EncodedPairs:
    """(source ids, target ids, reference) per pair, kept as flat id arrays with offsets. References are the
    target sentences, kept for evaluation splits; a training pair's is decoded from its ids when asked for."""

    def __init__(self, dtype: Any, tgt_tok: Tokenizer, keep_refs: bool):
        self.dtype, self.tgt_tok = dtype, tgt_tok
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.refs: list[str] | None = [] if keep_refs else None
        self.src = self.tgt = np.zeros(0, dtype)
        self.src_off = self.tgt_off = np.zeros(1, np.int64)

    def add(self, src: np.ndarray, src_len: np.ndarray, tgt: np.ndarray, tgt_len: np.ndarray, keep: np.ndarray,
            refs: list[str]) -> None:
        """A batch: both sides' ids end to end with each pair's lengths; `keep` says which pairs stay."""
        self.parts.append((src[np.repeat(keep, src_len)], src_len[keep], tgt[np.repeat(keep, tgt_len)], tgt_len[keep]))
        if self.refs is not None:
            self.refs += [r for r, k in zip(refs, keep) if k]

    def finish(self) -> "EncodedPairs":
        if self.parts:
            src, src_len, tgt, tgt_len = (np.concatenate(x) for x in zip(*self.parts))
            self.src, self.tgt = src, tgt
            self.src_off = np.concatenate([[0], np.cumsum(src_len)])
            self.tgt_off = np.concatenate([[0], np.cumsum(tgt_len)])
        self.parts = []
        return self

    def __len__(self) -> int:
        return len(self.src_off) - 1

    def __getitem__(self, i: int) -> tuple[list[int], list[int], str]:
        src = self.src[self.src_off[i]:self.src_off[i + 1]].tolist()
        tgt = self.tgt[self.tgt_off[i]:self.tgt_off[i + 1]].tolist()
        return src, tgt, self.refs[i] if self.refs is not None else target_text(self.tgt_tok, tgt)

    def __iter__(self) -> Iterator[tuple[list[int], list[int], str]]:
        return (self[i] for i in range(len(self)))

    def lengths(self) -> np.ndarray:
        return np.diff(self.src_off) + np.diff(self.tgt_off)
