"""Text data: corpus reading, split, cached token arrays, windows, and one-line errors."""
import numpy as np
import pytest
import torch

from builder.train.data.text import TextData, chunks, default_text, find_path, validation_windows
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
    assert dm.model_sizes() == {"vocab": len(set(LINES))}
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


@pytest.mark.parametrize("case, message", [
    ("pair", r"data\.tokenizer\.path: .*pair\.json holds a translation run's two tokenizers \(source and target\)"),
    ("text", r"data\.tokenizer\.path: .*notes\.txt is not a tokenizer\.json: not JSON"),
    ("dir", r"data\.tokenizer\.path: the directory .*run holds no tokenizer\.json"),
])
def test_tokenizer_path_that_is_not_a_tokenizer(tmp_path, case, message):
    from builder.tokenizer import char_tokenizer
    from builder.pairs import tokenizers_to_str
    (tmp_path / "run").mkdir()
    write(tmp_path / "pair.json", tokenizers_to_str(char_tokenizer(LINES), char_tokenizer(LINES.upper())))
    write(tmp_path / "notes.txt", "not a tokenizer\n")
    path = {"pair": "pair.json", "text": "notes.txt", "dir": "run"}[case]
    dm = data(tmp_path, path=write(tmp_path / "a.txt", LINES), tokenizer={"path": str(tmp_path / path)})
    with pytest.raises(ConfigError, match=message) as e:
        dm.model_sizes()
    assert len(e.value.problems) == 1 and "\n" not in e.value.problems[0]


def test_given_tokenizer_missing_characters_is_found_before_training(tmp_path, compose):
    from tokenizers import Tokenizer as HFTokenizer, models

    from builder.tokenizer import char_tokenizer
    from builder.train.run import train
    corpus = write(tmp_path / "a.txt", LINES + "Zürich\n")
    char_tokenizer(LINES).save(tmp_path / "char.json")  # lacks 'Z' and 'ü'
    run_dir = tmp_path / "run"
    overrides = ["experiment=gpt_char", "model.n_layer=1", "model.n_head=2", "model.d_model=16",
                 "model.block_size=16", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                 f"data.path={corpus}", f"data.tokenizer.path={tmp_path / 'char.json'}",
                 f"data.cache_dir={tmp_path / 'cache'}", f"run_dir={run_dir}"]
    with pytest.raises(ConfigError, match=r"^data\.tokenizer\.path: .*char\.json cannot encode 2 distinct characters "
                       r"of the corpus: 'Z' 1 time, 'ü' 1 time; give a tokenizer that covers them"):
        train(compose(overrides), overrides=overrides)
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "checkpoints").exists()  # before the model
    bpe = HFTokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(set(LINES) - {"q", "z"}))}, merges=[]))
    bpe.save(str(tmp_path / "bpe.json"))  # no [UNK]: it would drop 'q' and 'z' from the text without a word
    dm = data(tmp_path, path=corpus, tokenizer={"path": str(tmp_path / "bpe.json")})
    with pytest.raises(ConfigError, match=r"bpe\.json cannot encode 4 distinct characters of the corpus: 'q' 60 times, "
                                          r"'z' 60 times, 'Z' 1 time, 'ü' 1 time; "):
        dm.model_sizes()


def test_byte_order_mark_and_windows_line_ends_are_not_text(tmp_path):
    (tmp_path / "docs").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "docs" / name).write_bytes(b"\xef\xbb\xbf" + LINES.replace("\n", "\r\n").encode())
    dm = data(tmp_path, path=str(tmp_path / "docs"))
    dm.setup()
    assert dm.text == LINES + "\n\n" + LINES
    assert "\ufeff" not in dm.tokenizer.tok.get_vocab() and "\r" not in dm.tokenizer.tok.get_vocab()


def saved_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets", reason="the optional `datasets` package is not installed")
    ds = datasets.Dataset.from_dict({"text": [f"document {i}: {LINES[:200]}" for i in range(10)],
                                     "id": list(range(10)), "title": [f"doc {i}" for i in range(10)]})
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "ds"))
    return str(tmp_path / "ds")


@pytest.mark.parametrize("spec, message", [
    ({"column": "id"}, r"^data\.hf_dataset\.column: column 'id' holds int64, not text; "
                       r"the text columns are text, title$"),
    ({"split": "valid"}, r"^data\.hf_dataset\.split: no split 'valid' in .*ds \(did you mean 'validation'\?\); "
                         r"it has train, validation$"),
    ({"colum": "text"}, r"^data\.hf_dataset\.colum: no such key \(did you mean 'column'\?\); the keys are path, name, "
                        r"split, column$"),
])
def test_hugging_face_dataset_errors_name_the_key(tmp_path, spec, message):
    dm = data(tmp_path, hf_dataset={"path": saved_dataset_dict(tmp_path), **spec})
    with pytest.raises(ConfigError, match=message):
        dm.setup()
    good = data(tmp_path, hf_dataset={"path": str(tmp_path / "ds"), "split": "validation", "column": "title"})
    assert good.corpus()[0].startswith("doc 0\n\ndoc 1")


def test_hugging_face_single_split_and_null_rows(tmp_path):
    datasets = pytest.importorskip("datasets", reason="the optional `datasets` package is not installed")
    datasets.Dataset.from_dict({"text": [LINES] * 3}, split="train").save_to_disk(str(tmp_path / "one"))
    with pytest.raises(ConfigError, match=r"^data\.hf_dataset\.split: .*one holds the single split 'train', "
                                          r"not 'test'$"):
        data(tmp_path, hf_dataset={"path": str(tmp_path / "one"), "split": "test"}).setup()
    datasets.Dataset.from_dict({"text": [LINES, None, LINES]}).save_to_disk(str(tmp_path / "nulls"))
    with pytest.raises(ConfigError, match=r"^data\.hf_dataset\.column: 1 of 3 rows of column 'text' are null; "):
        data(tmp_path, hf_dataset={"path": str(tmp_path / "nulls")}).setup()
