"""Text data: corpus reading, split, cached token arrays, windows, and one-line errors."""
import numpy as np
import pytest
import torch

from builder.data.text import TextData, chunks, default_text, find_path, validation_windows
from builder.errors import ConfigError

LINES = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(60))


def data(tmp_path, **cfg):
    base = {"name": "text", "block_size": 16, "batch_size": 4, "cache_dir": str(tmp_path / "cache")}
    return TextData({**base, **cfg}, seed=0)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_split_tokens_and_cache(tmp_path):
    dm = data(tmp_path, path=write(tmp_path / "a.txt", LINES))
    assert dm.model_sizes() == {"vocab_size": len(set(LINES))}
    dm.setup()
    cut = int(len(LINES) * 0.9)  # the last 10% is validation
    tok = dm.tokenizer
    assert tok.decode(dm.train_ids.tolist()) == LINES[:cut] and tok.decode(dm.val_ids.tolist()) == LINES[cut:]
    assert isinstance(dm.train_ids, np.memmap)
    files = sorted((tmp_path / "cache").glob("*.bin"))
    assert len(files) == 2
    stamps = [f.stat().st_mtime_ns for f in files]
    again = data(tmp_path, path=str(tmp_path / "a.txt"))
    again.setup()  # same text and tokenizer: the cached arrays are reused, not rewritten
    assert [f.stat().st_mtime_ns for f in files] == stamps
    write(tmp_path / "a.txt", LINES.replace("fox", "cat"))
    changed = data(tmp_path, path=str(tmp_path / "a.txt"))
    changed.setup()  # new contents: new cache entries
    assert len(list((tmp_path / "cache").glob("*.bin"))) == 4


def test_train_windows_are_shifted_and_seeded(tmp_path):
    dm = data(tmp_path, path=write(tmp_path / "a.txt", LINES))
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # the target is the input shifted by one
    x2, _ = next(iter(dm.train_dataloader()))
    assert torch.equal(x, x2)  # the run's seed fixes the draws


def test_validation_covers_every_token_once(tmp_path):
    for n in (17, 18, 40, 48, 49, 100):
        starts, scored = validation_windows(n, 16, None)
        targets = [s + 1 + j for s, k in zip(starts, scored) for j in range(k, 16)]
        assert sorted(targets) == list(range(1, n)), n
    starts, _ = validation_windows(1000, 16, 5)
    assert len(starts) == 5 and starts[0] == 0
    dm = data(tmp_path, path=write(tmp_path / "a.txt", LINES))
    dm.setup()
    counted = sum(int((y != -100).sum()) for _, y in dm.val_dataloader())
    assert counted == len(dm.val_ids) - 1


def test_directory_and_given_tokenizer(tmp_path):
    (tmp_path / "docs").mkdir()
    write(tmp_path / "docs" / "b.txt", "second file\n" * 30)
    write(tmp_path / "docs" / "a.txt", "first file\n" * 30)
    dm = data(tmp_path, path=str(tmp_path / "docs"))
    assert dm.corpus()[0].startswith("first file")  # sorted order
    assert "second file" in dm.text
    dm.get_tokenizer().save(tmp_path / "tokenizer.json")
    given = data(tmp_path, path=str(tmp_path / "docs"), tokenizer={"path": str(tmp_path / "tokenizer.json")})
    assert given.get_tokenizer().to_str() == dm.get_tokenizer().to_str()


def test_bpe_chunks_encode_like_the_whole_text(tmp_path):
    text = LINES * 30
    assert "".join(chunks(text, size=500)) == text
    dm = data(tmp_path, path=write(tmp_path / "a.txt", text), tokenizer={"kind": "bpe", "vocab_size": 300})
    dm.setup()
    assert dm.train_ids.tolist() == dm.tokenizer.encode(dm.corpus()[0])


def test_default_corpus_is_pydoc_topics():
    text = default_text()
    assert len(text) > 300_000 and "assert" in text


def test_relative_path_from_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_path("conf/data/text.yaml").is_file()


@pytest.mark.parametrize("case, message", [
    ("missing", r"data.path: .*nope.txt does not exist"),
    ("empty", r"data.path: .*empty.txt is empty"),
    ("latin1", r"data.path: .*latin1.txt is not UTF-8 text: byte 0xe9 at offset 3"),
    ("short", r"training split has \d+ tokens, fewer than one window of block_size \+ 1 = 17"),
])
def test_one_line_errors(tmp_path, case, message):
    files = {"empty": b"", "latin1": "café au lait".encode("latin-1"), "short": b"tiny text\n"}
    if case in files:
        (tmp_path / f"{case}.txt").write_bytes(files[case])
    dm = data(tmp_path, path=str(tmp_path / ("nope.txt" if case == "missing" else f"{case}.txt")))
    with pytest.raises(ConfigError, match=message) as e:
        dm.setup()
    assert len(e.value.problems) == 1 and "\n" not in e.value.problems[0]


def test_hugging_face_dataset(tmp_path):
    datasets = pytest.importorskip("datasets", reason="the optional `datasets` package is not installed")
    ds = datasets.Dataset.from_dict({"text": [f"document {i}: {LINES[:200]}" for i in range(10)], "id": list(range(10))})
    ds.save_to_disk(str(tmp_path / "ds"))
    dm = data(tmp_path, hf_dataset={"path": str(tmp_path / "ds"), "split": "train", "column": "text"})
    dm.setup()
    assert dm.text.startswith("document 0:") and len(dm.train_ids) > len(dm.val_ids) > 16
    bad = data(tmp_path, hf_dataset={"path": str(tmp_path / "ds"), "column": "body"})
    with pytest.raises(ConfigError, match="no column 'body'; the data set has text, id"):
        bad.setup()
