"""A Hugging Face `datasets` source as a corpus (data.hf_dataset): one text column, rows joined by the
separator, read BLOCK bytes at a time. A data set saved with `save_to_disk` or prepared by `load_dataset` is
memory-mapped Arrow; `streaming: true` reads a hub data set as it downloads, never storing it whole, and
measures it by one extra pass (its size decides where validation starts), remembered in data.cache_dir.
`datasets` is imported only here.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from builder.errors import ConfigError, suggest
from builder.tokenizer import first_line
from builder.train.data.corpus import BLOCK, Block, Corpus, digest

HF_KEYS = ("path", "name", "split", "column", "streaming")
TEXT_TYPES = ("string", "large_string")
ROWS = 1024  # rows converted to Python at a time


class RowsSource:
    """The rows of one column, joined by `separator`, in blocks of about BLOCK bytes."""

    def __init__(self, ds: Any, column: str, separator: bytes, name: str, streaming: bool):
        self.ds, self.column, self.separator, self.name = ds.select_columns([column]), column, separator, name
        self.streaming = streaming
        self.size = None if streaming else self.arrow_size()

    def arrow_size(self) -> int:
        import pyarrow.compute as pc  # optional dependency: comes with datasets, only with data.hf_dataset
        total, rows = 0, 0
        for table in self.ds.with_format("arrow").iter(batch_size=1 << 16):  # offsets only: no text is copied
            total += pc.sum(pc.binary_length(table[self.column])).as_py() or 0
            rows += len(table)
        return total + len(self.separator) * max(rows - 1, 0)

    def key(self) -> str:
        first = next(self.blocks(), Block(b"", 0))
        return digest(self.name, self.column, getattr(self.ds, "_fingerprint", None) or "", first.data[:1 << 16])

    def blocks(self) -> Iterator[Block]:
        sep, pending, n, row = self.separator.decode("utf-8"), [], 0, 0
        for batch in self.rows():
            for text in batch[self.column]:
                row += 1
                if text is None:
                    raise ConfigError(f"data.hf_dataset.column: row {row} of column '{self.column}' is null; drop the "
                                      "null rows from the data set (Dataset.filter) first")
                pending.append(text)
                n += len(text)
                if n >= BLOCK:
                    yield self.block(sep, pending, row == len(pending))
                    pending, n = [], 0
        if pending:
            yield self.block(sep, pending, row == len(pending))

    def rows(self) -> Iterator[dict[str, list[Any]]]:
        """Batches of rows; a source that fails while read (a broken file, a lost connection) is one line."""
        batches = iter(self.ds.iter(batch_size=ROWS))
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - whatever the data set's reader raises
                raise ConfigError(f"data.hf_dataset: cannot read {self.name.split(':')[0]}: {first_line(e)}") from None
            yield batch

    def block(self, sep: str, texts: list[str], first: bool) -> Block:
        data = (("" if first else sep) + sep.join(texts)).encode("utf-8")
        return Block(data, len(data))


def open_hf_dataset(spec: Any, separator: str) -> Corpus:
    """{path: a name or a save_to_disk directory, name, split, column, streaming} as a corpus."""
    if not isinstance(spec, dict) or not spec.get("path"):
        raise ConfigError(f"data.hf_dataset: expected {{path: NAME_OR_DIR, name: null, split: train, column: text}}, "
                          f"got {spec!r}")
    unknown = [k for k in spec if k not in HF_KEYS]
    if unknown:
        raise ConfigError([f"data.hf_dataset.{k}: no such key{suggest(k, HF_KEYS)}; the keys are {', '.join(HF_KEYS)}"
                           for k in unknown])
    try:
        import datasets  # optional dependency: only with data.hf_dataset
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
        ds = load_hub_dataset(datasets, path, spec.get("name"), split, bool(spec.get("streaming")))
    check_column(ds, column)
    source = RowsSource(ds, column, separator.encode("utf-8"), f"{path}:{spec.get('name')}:{split}",
                        isinstance(ds, datasets.IterableDataset))
    if not source.streaming:
        nulls = ds.data.column(column).null_count if getattr(ds, "_indices", None) is None else 0
        if nulls:
            raise ConfigError(f"data.hf_dataset.column: {nulls} of {len(ds)} rows of column '{column}' are null; "
                              "drop them from the data set (Dataset.filter) first")
    corpus = Corpus([source], separator, f"data.hf_dataset: column '{column}' of {path} is empty")
    if source.size == 0:
        raise ConfigError(corpus.empty)
    return corpus


def check_column(ds: Any, column: str) -> None:
    """The column exists and holds text (a streamed data set whose features are unknown is checked as read)."""
    names = ds.column_names
    if names is None:
        return
    if column not in names:
        raise ConfigError(f"data.hf_dataset.column: no column '{column}'{suggest(column, names)}; "
                          f"the data set has {', '.join(names)}")
    if ds.features is None:
        return
    kinds = {c: getattr(f, "dtype", None) or type(f).__name__ for c, f in ds.features.items()}
    if kinds[column] not in TEXT_TYPES:
        texts = [c for c, k in kinds.items() if k in TEXT_TYPES]
        others = (f"the text columns are {', '.join(texts)}" if texts else
                  "no column holds text (" + ", ".join(f"{c}: {k}" for c, k in kinds.items()) + ")")
        raise ConfigError(f"data.hf_dataset.column: column '{column}' holds {kinds[column]}, not text; {others}")


def load_hub_dataset(datasets: Any, path: str, name: str | None, split: str, streaming: bool = False) -> Any:
    """datasets.load_dataset, with an unknown split, configuration or data set as one line."""
    try:
        return datasets.load_dataset(path, name, split=split, streaming=streaming)
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
