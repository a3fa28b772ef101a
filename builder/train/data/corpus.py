"""A text corpus read in bounded memory: one file, a directory or glob of files, a Hugging Face `datasets`
source (data.hf_dataset, see hf_corpus.py) or the built-in text, streamed in blocks of about BLOCK bytes.

Positions are byte offsets into the corpus as stored: the files' bytes (a UTF-8 byte-order mark and the "\\r"
of Windows line ends count, though neither reaches the text) with `separator` between documents. The train
and validation split is a byte offset, so it is decided from the files' sizes without reading them; a split
falls on a character boundary, never inside a "\\r\\n". A corpus is keyed for caches by the files' paths, sizes
and modification times and a hash of each file's first and last 64 KiB (a data set: its fingerprint and its
first block), so the key never needs the whole text.
"""
from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any, Iterable, Iterator

from tqdm import tqdm

from builder.config import CONF_DIR
from builder.errors import ConfigError

BLOCK = 1 << 21  # bytes read, decoded and encoded at a time
SAMPLE = 1 << 16  # bytes of each file's head and tail in the cache key
BOM = b"\xef\xbb\xbf"


def default_text() -> str:
    """CPython's documentation topics (what `help("assert")` shows): ~465 KB of English and code."""
    return "\n\n".join(topics.values())


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8") if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:20]


@dataclass
class Block:
    data: bytes
    consumed: int  # corpus bytes it stands for: len(data) and a byte-order mark left out of it
    normalize: bool = False  # "\r\n" -> "\n" (files)
    file: Path | None = None  # where an undecodable byte is reported
    offset: int = 0  # of data in that file


def missing_bytes(data: bytes) -> int:
    """Bytes still to come of a UTF-8 character that `data` ends inside; 0 when it ends on a boundary."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b & 0xC0 != 0x80:  # the character's first byte
            width = 1 if b < 0x80 else 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4 if b >> 3 == 0b11110 else 1
            return max(0, width - back)
    return 0


def boundary(data: bytes, k: int, normalize: bool) -> int:
    """The first place at or after k where `data` may be split: a character boundary, not inside "\\r\\n"."""
    while k < len(data) and data[k] & 0xC0 == 0x80:
        k += 1
    if normalize and 0 < k < len(data) and data[k - 1] == 13 and data[k] == 10:
        k += 1
    return k


class FileSource:
    def __init__(self, path: Path):
        self.path = path
        stat = path.stat()
        self.size, self.mtime = stat.st_size, stat.st_mtime_ns

    def key(self) -> str:
        with open(self.path, "rb") as f:
            head = f.read(SAMPLE)
            f.seek(max(0, self.size - SAMPLE))
            tail = f.read(SAMPLE)
        return digest(str(self.path.resolve()), str(self.size), str(self.mtime), head, tail)

    def blocks(self) -> Iterator[Block]:
        """Blocks that end on a character boundary and not after a "\\r" (its "\\n" may follow)."""
        with open(self.path, "rb") as f:
            offset = 0
            while data := f.read(BLOCK):
                for _ in range(64):  # a run of "\r"s is split anywhere: only "\r\n" matters
                    need = missing_bytes(data) or (1 if data.endswith(b"\r") else 0)
                    more = f.read(need) if need else b""
                    if not more:
                        break
                    data += more
                skip = len(BOM) if offset == 0 and data.startswith(BOM) else 0
                yield Block(data[skip:], len(data), True, self.path, offset + skip)
                offset += len(data)


class TextSource:
    def __init__(self, text: str):
        self.data = text.encode("utf-8")
        self.size = len(self.data)

    def key(self) -> str:
        return digest(self.data)

    def blocks(self) -> Iterator[Block]:
        start = 0
        while start < self.size:
            end = boundary(self.data, min(start + BLOCK, self.size), False)
            yield Block(self.data[start:end], end - start)
            start = end


def progress(desc: str, total: int | None) -> Any:
    """A bar with bytes done, MB/s and time left; shown once a pass takes longer than a second."""
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, delay=1.0, dynamic_ncols=True)


class Corpus:
    """Documents (`sources`, each with `size` (None: unknown until read), `key()` and `blocks()`) joined by
    `separator`; `empty` is the error for a corpus without text."""

    def __init__(self, sources: list[Any], separator: str, empty: str):
        self.sources, self.separator, self.empty = sources, separator.encode("utf-8"), empty
        self.chars: set[str] | None = None  # the alphabet, once a scan has read it
        self.measured: int | None = None
        self._key: str | None = None

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = digest(self.separator, *(s.key() for s in self.sources))
        return self._key

    def known_size(self) -> int | None:
        """Bytes of the corpus, None when a source's size is only known by reading it."""
        if self.measured is not None:
            return self.measured
        sizes = [s.size for s in self.sources]
        return None if None in sizes else sum(sizes) + len(self.separator) * (len(sizes) - 1)

    def size(self) -> int:
        known = self.known_size()
        return known if known is not None else self.scan()[0]

    def blocks(self) -> Iterator[Block]:
        for i, source in enumerate(self.sources):
            if i and self.separator:
                yield Block(self.separator, len(self.separator))
            yield from source.blocks()

    def decode(self, block: Block, lo: int = 0, hi: int | None = None) -> str:
        try:
            text = block.data[lo:hi].decode("utf-8")
        except UnicodeDecodeError as e:
            data, at = block.data[lo:hi], block.offset + lo + e.start
            raise ConfigError(f"data.path: {block.file} is not UTF-8 text: byte 0x{data[e.start]:02x} at offset "
                              f"{at} ({e.reason})") from None
        return text.replace("\r\n", "\n") if block.normalize else text

    def read(self, cut: int | None = None, stop: int | None = None, desc: str | None = None
             ) -> Iterator[tuple[int, str]]:
        """(part, text) pieces in order: part 0 before byte `cut`, 1 from there on, up to byte `stop` (both moved
        to the next character boundary). `desc` shows a progress bar."""
        total = self.known_size()
        if stop is not None and total is not None:
            total = min(total, stop)
        bar = progress(desc, total) if desc else None
        pos = 0
        try:
            for block in self.blocks():
                start = pos + block.consumed - len(block.data)  # the corpus offset of block.data
                end = len(block.data) if stop is None else self.place(block, stop - start)
                k = end if cut is None else min(self.place(block, cut - start), end)
                if k:
                    yield 0, self.decode(block, 0, k)
                if k < end:
                    yield 1, self.decode(block, k, end)
                if bar is not None:
                    bar.update(block.consumed if stop is None else min(block.consumed, max(stop - pos, 0)))
                pos += block.consumed
                if stop is not None and pos >= stop:
                    break
        finally:
            if bar is not None:
                bar.close()

    @staticmethod
    def place(block: Block, k: int) -> int:
        return boundary(block.data, min(max(k, 0), len(block.data)), block.normalize)

    def scan(self, desc: str = "reading the corpus") -> tuple[int, set[str]]:
        """(size, alphabet) by one pass over the corpus."""
        if self.chars is None:
            chars: set[str] = set()
            bar = progress(desc, self.known_size())
            size = 0
            with bar:
                for block in self.blocks():
                    chars.update(self.decode(block))
                    size += block.consumed
                    bar.update(block.consumed)
            self.chars, self.measured = chars, size
        return self.measured, self.chars

    def texts(self, cut: int | None = None, part: int | None = None, stop: int | None = None,
              desc: str | None = None) -> Iterator[str]:
        """The text of one part (None: all of it), piece by piece."""
        if part == 0 and cut is not None:
            stop = cut if stop is None else min(stop, cut)
        for p, text in self.read(cut, stop, desc):
            if part is None or p == part:
                yield text


def find_path(path: str) -> Path:
    """A relative path is looked up in the working directory, then in the project root (where conf/ is),
    so presets that name files beside the repository work from any directory."""
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [p, CONF_DIR.parent / p]
    for c in candidates:
        if c.exists():
            return c
    raise ConfigError(f"data.path: {path} does not exist" +
                      ("" if p.is_absolute() else f" (looked in {Path.cwd()} and {CONF_DIR.parent})"))


def find_files(path: str) -> tuple[list[Path], str]:
    """The files of data.path (a file, a directory: every file under it, or a glob), sorted, and how to name
    them in errors."""
    if glob.has_magic(path):
        p = Path(path).expanduser()
        for root in ([None] if p.is_absolute() else [Path.cwd(), CONF_DIR.parent]):
            pattern = str(p if root is None else root / p)
            files = sorted(Path(f) for f in glob.glob(pattern, recursive=True) if Path(f).is_file())
            if files:
                return files, f"the files matching {path}"
        raise ConfigError(f"data.path: no files match {path}" +
                          ("" if p.is_absolute() else f" (looked in {Path.cwd()} and {CONF_DIR.parent})"))
    found = find_path(path)
    if found.is_file():
        return [found], str(found)
    files = sorted(p for p in found.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ConfigError(f"data.path: the directory {found} holds no files")
    return files, f"the files under {found}"


def separator_of(cfg: dict[str, Any]) -> str:
    """The text put between documents (data.separator; a blank line by default)."""
    separator = cfg.get("separator")
    return "\n\n" if separator is None else str(separator)


def open_corpus(cfg: dict[str, Any]) -> Corpus:
    """The corpus of files (or the built-in text) a data config names; a missing, empty or unreadable one is a
    one-line ConfigError. A `datasets` source is builder/train/data/hf_corpus.py's."""
    separator = separator_of(cfg)
    if not cfg.get("path"):
        return Corpus([TextSource(default_text())], separator, "data.path: the built-in text is empty")
    files, name = find_files(str(cfg["path"]))
    corpus = Corpus([FileSource(f) for f in files], separator,
                    f"data.path: {name} is empty" if len(files) == 1 else f"data.path: {name} are empty")
    if not any(s.size for s in corpus.sources):
        raise ConfigError(corpus.empty)
    return corpus


def rebatch(pieces: Iterable[str], size: int, safe_end: Any) -> Iterator[str]:
    """The concatenation of `pieces` again, in texts of about `size` characters cut at `safe_end(text)`; a text
    with no safe place is cut at its end once it reaches 4 * size."""
    pending, n = [], 0
    for piece in pieces:
        pending.append(piece)
        n += len(piece)
        if n < size:
            continue
        text = "".join(pending)
        end = safe_end(text) or (len(text) if len(text) >= 4 * size else 0)
        if end:
            yield text[:end]
            text = text[end:]
        pending, n = [text], len(text)
    if n:
        yield "".join(pending)
