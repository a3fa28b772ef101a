"""Tokenizers on the `tokenizers` library: character-level and byte-level BPE, stored as tokenizer.json.

Character level: one token per character of the corpus alphabet (sorted), as in nanoGPT. Byte-level BPE:
GPT-2's scheme, merges learnt from the training text. Either serialises to one JSON string, kept both as
tokenizer.json in the run directory and inside the checkpoint, so a model always travels with its vocabulary.
A tokenizer.json written by another tool (Hugging Face GPT-2's) loads the same way.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

KINDS = ("char", "bpe")
EOT = "<|endoftext|>"


class Tokenizer:
    """text <-> token ids; `kind` is "char" when every token is one character (bits per character = bits per token)."""

    def __init__(self, tok: HFTokenizer):
        self.tok = tok
        self.kind = "char" if json.loads(tok.to_str())["model"]["type"] == "WordLevel" else "bpe"

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
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

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


def describe_missing(missing: list[str], text: str, where: str, shown: int = 8) -> str:
    """"3 distinct characters {where}: 'é' 40 times, ..." for the characters of `text` a tokenizer lacks, most
    frequent first."""
    from collections import Counter
    count = Counter(text).__getitem__ if len(missing) > 32 else text.count  # many: one pass over the text
    counts = sorted(((count(c), c) for c in missing), key=lambda nc: (-nc[0], nc[1]))
    what = "a character" if len(missing) == 1 else f"{len(missing)} distinct characters"
    more = f", ... {len(missing) - shown} more" if len(missing) > shown else ""
    return f"{what} {where}: " + ", ".join(f"{c!r} {n} time{'s' if n != 1 else ''}" for n, c in counts[:shown]) + more


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def char_tokenizer(text: str) -> Tokenizer:
    """One token per distinct character of `text`, ids in sorted character order."""
    vocab = {c: i for i, c in enumerate(sorted(set(text)))}
    tok = HFTokenizer(models.WordLevel(vocab, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character alone
    tok.decoder = decoders.Fuse()  # join tokens without spaces
    return Tokenizer(tok)


def bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2's scheme): 256 byte tokens, merges learnt from `texts`, and <|endoftext|>."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(tok)


def train_tokenizer(kind: str, train_text: str, all_text: str, vocab_size: int = 4096) -> Tokenizer:
    """A new tokenizer: BPE merges come from the training text; the character alphabet from the whole
    corpus (a character seen only in validation would otherwise have no id, as nanoGPT also does)."""
    if kind == "char":
        return char_tokenizer(all_text)
    if kind == "bpe":
        chunk = 1 << 20  # the trainer takes an iterator: feed it pieces, not one huge string
        return bpe_tokenizer((train_text[i:i + chunk] for i in range(0, len(train_text), chunk)), vocab_size)
    raise ValueError(f"data.tokenizer.kind: unknown kind '{kind}'; available: {', '.join(KINDS)}")
