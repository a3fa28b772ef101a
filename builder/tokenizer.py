"""Tokenizers on the `tokenizers` library: character-level and byte-level BPE, stored as tokenizer.json.

Character level: one token per character of the corpus alphabet (sorted), as in nanoGPT. Byte-level BPE:
GPT-2's scheme, merges learnt from the training text. Either serialises to one JSON string, kept both as
tokenizer.json in the run directory and inside the checkpoint, so a model always travels with its vocabulary.
A tokenizer.json written by another tool (Hugging Face GPT-2's) loads the same way.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

KINDS = ("char", "bpe")
EOT = "<|endoftext|>"
CHUNK = 1 << 12  # characters per piece that the tokenizers library encodes on one core
NOT_IN_ALPHABET = np.uint32(0xFFFFFFFF)


class Tokenizer:
    """text <-> token ids; `kind` is "char" when every token is one character (bits per character = bits per token)."""

    def __init__(self, tok: HFTokenizer):
        self.tok = tok
        self.kind = "char" if json.loads(tok.to_str())["model"]["type"] == "WordLevel" else "bpe"
        self._table: np.ndarray | None = None
        self._table_known = False
        self._vocab_table: np.ndarray | None = None

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int | None:
        return self.tok.token_to_id(EOT)

    def encode(self, text: str) -> list[int]:
        if self.kind == "char":
            unknown = sorted(set(text) - set(self.tok.get_vocab()))
            if unknown:
                raise ValueError(f"characters not in the tokenizer's alphabet: {''.join(unknown)!r}")
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)  # the same ids, without offsets
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def encode_array(self, text: str, dtype: Any = np.uint32) -> np.ndarray:
        """Token ids of `text` as one array, the same as `encode(text)`: a character tokenizer looks each
        character up in a table; any other is encoded in pieces of CHUNK characters on all cores."""
        table = self.char_table()
        if table is not None:
            return lookup(table, text, dtype)
        parts = [np.asarray(ids, dtype) for ids in self.encode_batch(chunks(text, CHUNK))]
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    def char_table(self) -> np.ndarray | None:
        """Token id by code point when the tokenizer is a plain character tokenizer (one-character tokens, no
        normalizer or added tokens, every character split alone), else None."""
        if not self._table_known:
            self._table_known = True
            obj = json.loads(self.to_str())
            vocab = obj["model"].get("vocab")
            if (obj["model"]["type"] == "WordLevel" and not obj.get("normalizer") and not obj.get("added_tokens")
                    and obj.get("pre_tokenizer") == CHAR_SPLIT and all(len(c) == 1 for c in vocab)):
                self._table = vocab_table(vocab)
        return self._table

    def vocab_table(self) -> np.ndarray:
        """Token id by code point for the vocabulary's one-character tokens (added tokens aside)."""
        if self._vocab_table is None:
            self._vocab_table = vocab_table(self.tok.get_vocab(with_added_tokens=False))
        return self._vocab_table

    def safe_end(self, text: str) -> int:
        """Where `text` may be cut so that its two parts encode to the ids of the whole: after its last newline
        that a non-space follows (anywhere, for a character tokenizer); 0 when there is no such place."""
        if self.char_table() is not None:
            return len(text)
        i = text.rfind("\n", 0, len(text) - 1)
        while i != -1 and text[i + 1].isspace():
            i = text.rfind("\n", 0, i)
        return i + 1

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of `ids`; skip_special drops special tokens (<s>, <pad>, <|endoftext|>, ...) instead of spelling them."""
        return self.tok.decode(list(ids), skip_special_tokens=skip_special)

    def to_str(self) -> str:
        return self.tok.to_str()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_str(), encoding="utf-8")

    @classmethod
    def from_str(cls, text: str) -> "Tokenizer":
        return cls(HFTokenizer.from_str(text))

    def missing(self, chars: Iterable[str]) -> list[str]:
        """The characters of `chars` this tokenizer cannot encode: it fails on them (no unknown token) or drops
        them silently. A character the pre-tokenizer removes by design (a space, for some) is not missing."""
        tok, out = self.tok, []
        for c in chars:
            if tok.token_to_id(c) is not None:
                continue
            text = tok.normalizer.normalize_str(c) if tok.normalizer else c
            pieces = [p for p, _ in tok.pre_tokenizer.pre_tokenize_str(text)] if tok.pre_tokenizer else [text]
            try:
                if all(tok.model.tokenize(p) for p in pieces if p):
                    continue
            except Exception:  # noqa: BLE001 - the tokenizers library's "missing [UNK]" is a bare Exception
                pass
            out.append(c)
        return out

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """A tokenizer.json (a directory means its tokenizer.json); anything else is a one-line ValueError
        (FileNotFoundError when there is no file)."""
        path = Path(path).expanduser()
        if path.is_dir():
            if not (path / "tokenizer.json").is_file():
                raise FileNotFoundError(f"the directory {path} holds no tokenizer.json")
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        text, obj = read_json(path)
        if isinstance(obj, dict) and "source" in obj and "target" in obj and "model" not in obj:
            raise ValueError(f"{path} holds a translation run's two tokenizers (source and target), not one; "
                             "a language model needs a single tokenizer.json (a language model run's, or GPT-2's)")
        if not isinstance(obj, dict) or "model" not in obj:
            kinds = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
            has = (f"the keys {', '.join(map(str, list(obj)[:6]))}" if isinstance(obj, dict)
                   else kinds.get(type(obj), "null"))
            raise ValueError(f"{path} is not a tokenizer.json: it has no 'model' entry (it holds {has})")
        try:
            return cls.from_str(text)
        except Exception as e:  # noqa: BLE001 - the tokenizers library raises bare Exceptions
            raise ValueError(f"{path} is not a tokenizer.json: {first_line(e)}") from None


def read_json(path: Path) -> tuple[str, Any]:
    """(text, parsed) of a JSON file; not UTF-8 or not JSON is a one-line ValueError."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a tokenizer.json: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                         f"{e.start})") from None
    try:
        return text, json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a tokenizer.json: not JSON ({e})") from None


def describe_missing(missing: list[str], text: str | Mapping[str, int], where: str, shown: int = 8) -> str:
    """"3 distinct characters {where}: 'é' 40 times, ..." for the characters of `text` a tokenizer lacks, most
    frequent first; `text` may instead be the counts of those characters (of a corpus read in pieces)."""
    if isinstance(text, Mapping):
        count = lambda c: text.get(c, 0)  # noqa: E731
    else:
        count = Counter(text).__getitem__ if len(missing) > 32 else text.count  # many: one pass over the text
    counts = sorted(((count(c), c) for c in missing), key=lambda nc: (-nc[0], nc[1]))
    what = "a character" if len(missing) == 1 else f"{len(missing)} distinct characters"
    more = f", ... {len(missing) - shown} more" if len(missing) > shown else ""
    return f"{what} {where}: " + ", ".join(f"{c!r} {n} time{'s' if n != 1 else ''}" for n, c in counts[:shown]) + more


def vocab_table(vocab: Mapping[str, int]) -> np.ndarray:
    """Token id by code point for the one-character entries of `vocab`; NOT_IN_ALPHABET elsewhere."""
    table = np.full(0x110000, NOT_IN_ALPHABET, np.uint32)
    chars = {c: i for c, i in vocab.items() if len(c) == 1}
    table[[ord(c) for c in chars]] = list(chars.values())
    return table


def lookup(table: np.ndarray, text: str, dtype: Any) -> np.ndarray:
    """The ids of each character of `text` in a vocab_table; a ValueError names the characters it lacks."""
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    ids = table[codes]
    unknown = ids == NOT_IN_ALPHABET
    if unknown.any():
        chars = "".join(sorted({chr(c) for c in np.unique(codes[unknown])}))
        raise ValueError(f"characters not in the tokenizer's alphabet: {chars!r}")
    return ids.astype(dtype)


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def count_chars(texts: Iterable[str], chars: Iterable[str]) -> dict[str, int]:
    """How often each of `chars` occurs in the pieces `texts`."""
    chars, counts = list(chars), {}
    for text in texts:
        for c in chars:
            counts[c] = counts.get(c, 0) + text.count(c)
    return counts


def chunks(text: str, size: int = CHUNK) -> list[str]:
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


def alphabet(texts: str | Iterable[str]) -> set[str]:
    """The distinct characters of a text, or of every piece of an iterable of texts."""
    if isinstance(texts, str):
        return set(texts)
    chars: set[str] = set()
    for text in texts:
        chars.update(text)
    return chars


def alphabet_tokenizer(chars: Iterable[str]) -> Tokenizer:
    """One token per character of `chars`, ids in sorted character order."""
    vocab = {c: i for i, c in enumerate(sorted(set(chars)))}
    tok = HFTokenizer(models.WordLevel(vocab, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character alone
    tok.decoder = decoders.Fuse()  # join tokens without spaces
    return Tokenizer(tok)


def char_tokenizer(text: str) -> Tokenizer:
    """One token per distinct character of `text`, ids in sorted character order."""
    return alphabet_tokenizer(set(text))


CHAR_SPLIT = json.loads(alphabet_tokenizer("a").to_str())["pre_tokenizer"]


def bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2's scheme): 256 byte tokens, merges learnt from `texts`, and <|endoftext|>."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(tok)


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"data.tokenizer.kind: unknown kind '{kind}'; available: {', '.join(KINDS)}")


def byte_cap(value: Any) -> int | None:
    """data.tokenizer.train_bytes: a positive number of bytes (1e8 and 100_000_000 alike), or None."""
    if value is None:
        return None
    try:
        cap = int(float(value))
    except (TypeError, ValueError):
        cap = 0
    if cap <= 0:
        raise ValueError(f"data.tokenizer.train_bytes: expected a positive number of bytes or null, got {value!r}")
    return cap


def train_tokenizer(kind: str, train_text: str | Iterable[str], all_text: str | Iterable[str],
                    vocab_size: int = 4096) -> Tokenizer:
    """A new tokenizer: BPE merges come from the training text; the character alphabet from the whole
    corpus (a character seen only in validation would otherwise have no id, as nanoGPT also does). Either
    text may be an iterable of pieces (read in bounded memory); only the one the kind needs is read."""
    check_kind(kind)
    if kind == "char":
        return alphabet_tokenizer(alphabet(all_text))
    pieces = [train_text] if isinstance(train_text, str) else train_text
    # the trainer reads its iterator 256 items ahead: small pieces keep that buffer small
    return bpe_tokenizer((c for piece in pieces for c in chunks(piece)), vocab_size)
