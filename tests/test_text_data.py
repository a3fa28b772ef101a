"""Text data: corpus reading, split, cached token arrays, windows, and one-line errors."""
import itertools
import json
import os
import pickle

import numpy as np
import pytest
import torch

from builder.train.data import corpus as corpus_module, text as text_module
from builder.train.data.text import TextData, Windows, default_text, find_path, validation_windows
from builder.errors import ConfigError
from builder.tokenizer import Tokenizer, chunks

LINES = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(60))


def data(tmp_path, **cfg):
    base = {"name": "text", "block_size": 16, "batch_size": 4, "cache_dir": str(tmp_path / "cache")}
    return TextData({**base, **cfg}, seed=0)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def corpus_text(dm, part=None):
    dm.get_corpus()
    return "".join(dm.corpus.texts(dm.cut, part))


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
    assert corpus_text(dm, 0).startswith("first file")  # sorted order
    assert corpus_text(dm) == "first file\n" * 30 + "\n\n" + "second file\n" * 30
    dm.get_tokenizer().save(tmp_path / "tokenizer.json")
    given = data(tmp_path, path=str(tmp_path / "docs"), tokenizer={"path": str(tmp_path / "tokenizer.json")})
    assert given.get_tokenizer().to_str() == dm.get_tokenizer().to_str()


def test_bpe_chunks_encode_like_the_whole_text(tmp_path):
    text = LINES * 30
    assert "".join(chunks(text, size=500)) == text
    dm = data(tmp_path, path=write(tmp_path / "a.txt", text), tokenizer={"kind": "bpe", "vocab_size": 300})
    dm.setup()
    assert dm.train_ids.tolist() == dm.tokenizer.encode(corpus_text(dm, 0))


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
    assert corpus_text(dm).startswith("document 0:") and len(dm.train_ids) > len(dm.val_ids) > 16
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
    assert dm.tokenizer.decode(dm.train_ids.tolist() + dm.val_ids.tolist()) == LINES + "\n\n" + LINES
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
                        r"split, column, streaming$"),
])
def test_hugging_face_dataset_errors_name_the_key(tmp_path, spec, message):
    dm = data(tmp_path, hf_dataset={"path": saved_dataset_dict(tmp_path), **spec})
    with pytest.raises(ConfigError, match=message):
        dm.setup()
    good = data(tmp_path, hf_dataset={"path": str(tmp_path / "ds"), "split": "validation", "column": "title"})
    assert corpus_text(good, 0).startswith("doc 0\n\ndoc 1")


def test_hugging_face_single_split_and_null_rows(tmp_path):
    datasets = pytest.importorskip("datasets", reason="the optional `datasets` package is not installed")
    datasets.Dataset.from_dict({"text": [LINES] * 3}, split="train").save_to_disk(str(tmp_path / "one"))
    with pytest.raises(ConfigError, match=r"^data\.hf_dataset\.split: .*one holds the single split 'train', "
                                          r"not 'test'$"):
        data(tmp_path, hf_dataset={"path": str(tmp_path / "one"), "split": "test"}).setup()
    datasets.Dataset.from_dict({"text": [LINES, None, LINES]}).save_to_disk(str(tmp_path / "nulls"))
    with pytest.raises(ConfigError, match=r"^data\.hf_dataset\.column: 1 of 3 rows of column 'text' are null; "):
        data(tmp_path, hf_dataset={"path": str(tmp_path / "nulls")}).setup()


MIXED = "".join(f"ligne {i}: déjà vu 😀 über\r\n" for i in range(40))  # multi-byte characters, Windows line ends


def test_blocks_end_on_characters_and_the_cut_on_a_boundary(tmp_path, monkeypatch):
    raw = b"\xef\xbb\xbf" + MIXED.encode()
    (tmp_path / "a.txt").write_bytes(raw)
    expected = MIXED.replace("\r\n", "\n")
    for block in (1, 2, 3, 5, 64):
        monkeypatch.setattr(corpus_module, "BLOCK", block)
        dm = data(tmp_path, path=str(tmp_path / "a.txt"))
        corpus = dm.get_corpus()
        assert corpus.size() == len(raw) and dm.cut == int(len(raw) * 0.9)
        for cut in (0, 1, 3, 4, 100, 101, 102, len(raw) - 1):
            train = "".join(corpus.texts(cut, part=0))
            assert train + "".join(corpus.texts(cut, part=1)) == expected, (block, cut)
            stored = train.replace("\n", "\r\n").encode()  # the bytes of the file it came from
            assert raw[3:3 + len(stored)] == stored  # cut at a character boundary, never inside "\r\n"
            assert max(cut - 3, 0) <= len(stored) <= max(cut - 3, 0) + 4


def test_tokenizing_holds_one_batch_at_a_time(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    for i in range(3):
        write(tmp_path / "docs" / f"{i}.txt", LINES * 2)
    monkeypatch.setattr(corpus_module, "BLOCK", 500)
    monkeypatch.setattr(text_module, "BATCH", 500)
    seen = []
    encode = Tokenizer.encode_array

    def recording(self, text, dtype):
        seen.append(len(text))
        return encode(self, text, dtype)
    monkeypatch.setattr(Tokenizer, "encode_array", recording)
    for kind in ("char", "bpe"):
        seen.clear()
        dm = data(tmp_path, path=str(tmp_path / "docs"), tokenizer={"kind": kind, "vocab_size": 300})
        dm.setup()
        assert len(seen) > 10 and max(seen) <= 2 * 500 + len(LINES.splitlines()[0]) + 1  # a batch, never the text
        whole = corpus_text(dm)
        assert dm.tokenizer.decode(dm.train_ids.tolist()) + dm.tokenizer.decode(dm.val_ids.tolist()) == whole
        assert dm.train_ids.tolist() == dm.tokenizer.encode(corpus_text(dm, 0))  # as if encoded whole
        assert dm.val_ids.tolist() == dm.tokenizer.encode(corpus_text(dm, 1))


def test_character_seen_only_in_validation_gets_an_id(tmp_path):
    dm = data(tmp_path, path=write(tmp_path / "a.txt", LINES + "Ω\n"))
    dm.setup()
    assert "Ω" in dm.tokenizer.tok.get_vocab() and dm.tokenizer.decode(dm.val_ids.tolist()).endswith("Ω\n")


def test_glob_with_a_separator_token_between_documents(tmp_path):
    (tmp_path / "docs").mkdir()
    for name in ("b.txt", "a.txt", "c.md"):
        write(tmp_path / "docs" / name, f"{name} " + LINES)
    dm = data(tmp_path, path=str(tmp_path / "docs" / "*.txt"), separator="<|endoftext|>",
              tokenizer={"kind": "bpe", "vocab_size": 300})
    assert corpus_text(dm) == "a.txt " + LINES + "<|endoftext|>" + "b.txt " + LINES  # sorted, c.md left out
    dm.setup()
    assert (dm.train_ids.tolist() + dm.val_ids.tolist()).count(dm.tokenizer.eos_id) == 1  # one special token
    with pytest.raises(ConfigError, match=r"^data\.path: no files match .*\*\.rst"):
        data(tmp_path, path=str(tmp_path / "docs" / "*.rst")).setup()


def test_interrupted_tokenization_leaves_no_cache_file(tmp_path, monkeypatch):
    path = write(tmp_path / "a.txt", LINES * 4)
    monkeypatch.setattr(corpus_module, "BLOCK", 300)
    monkeypatch.setattr(text_module, "BATCH", 300)
    encode, calls = Tokenizer.encode_array, []

    def interrupted(self, text, dtype):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return encode(self, text, dtype)
    monkeypatch.setattr(Tokenizer, "encode_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        data(tmp_path, path=path).setup()
    assert not list((tmp_path / "cache").glob("*.bin*"))  # neither a partial array nor its temporary file
    monkeypatch.setattr(Tokenizer, "encode_array", encode)
    dm = data(tmp_path, path=path)
    dm.setup()
    assert dm.tokenizer.decode(dm.train_ids.tolist() + dm.val_ids.tolist()) == LINES * 4


def test_cache_key_checks_contents_when_size_and_time_are_unchanged(tmp_path):
    file = tmp_path / "a.txt"
    write(file, LINES)
    first = data(tmp_path, path=str(file))
    first.setup()
    stamp = file.stat().st_mtime_ns
    write(file, LINES.replace("fox", "cat"))  # same size
    os.utime(file, ns=(stamp, stamp))  # and the same modification time
    again = data(tmp_path, path=str(file))
    again.setup()
    assert again.get_corpus().key != first.get_corpus().key
    assert "cat" in again.tokenizer.decode(again.train_ids.tolist())


def test_progress_bars_for_alphabet_bpe_training_and_tokenizing(tmp_path, monkeypatch):
    bars = []

    class Bar:
        def __init__(self, desc, total):
            self.desc, self.total, self.done = desc, total, 0
            bars.append(self)

        def update(self, n):
            self.done += n

        def close(self):
            pass
        __enter__ = lambda self: self  # noqa: E731
        __exit__ = lambda self, *a: None  # noqa: E731
    monkeypatch.setattr(corpus_module, "progress", Bar)
    size = len(LINES * 4)
    dm = data(tmp_path, path=write(tmp_path / "a.txt", LINES * 4))
    dm.setup()
    assert [(b.desc, b.total, b.done) for b in bars] == [("reading the alphabet", size, size), ("tokenizing", size, size)]
    bars.clear()
    data(tmp_path, path=str(tmp_path / "a.txt"), tokenizer={"kind": "bpe", "vocab_size": 300}).setup()
    cut = int(size * 0.9)
    assert [(b.desc, b.total, b.done) for b in bars] == [("training BPE", cut, cut), ("tokenizing", size, size)]


def test_bpe_train_bytes_caps_the_text_the_merges_come_from(tmp_path, monkeypatch):
    seen = []

    def recording(kind, train, every, vocab_size):
        pieces = list(train)
        seen.append(sum(len(p.encode()) for p in pieces))
        return text_module.train_tokenizer.__wrapped__(kind, pieces, every, vocab_size)
    recording.__wrapped__ = text_module.train_tokenizer
    monkeypatch.setattr(text_module, "train_tokenizer", recording)
    path = write(tmp_path / "a.txt", LINES * 10)
    capped = data(tmp_path, path=path, tokenizer={"kind": "bpe", "vocab_size": 300, "train_bytes": 1000})
    capped.setup()
    full = data(tmp_path, path=path, tokenizer={"kind": "bpe", "vocab_size": 300})
    full.setup()
    assert seen == [1000, int(len(LINES * 10) * 0.9)]
    with pytest.raises(ConfigError, match=r"^data\.tokenizer\.train_bytes: expected a positive number of bytes or "
                                          r"null, got 'lots'$"):
        data(tmp_path, path=path, tokenizer={"kind": "bpe", "train_bytes": "lots"}).setup()


def test_loader_workers_open_the_token_file_themselves(tmp_path):
    dm = data(tmp_path, path=write(tmp_path / "a.txt", LINES * 20), num_workers=2)
    dm.setup()
    ds = Windows(dm.train_ids, 16)
    assert len(pickle.dumps(ds)) < 1000 < dm.train_ids.nbytes  # the file's name travels, not its tokens
    assert torch.equal(pickle.loads(pickle.dumps(ds))[5][0], ds[5][0])
    loader = dm.train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers
    with_workers = [x for x, _ in itertools.islice(loader, 8)]
    single = data(tmp_path, path=str(tmp_path / "a.txt"))
    single.setup()
    alone = [x for x, _ in itertools.islice(single.train_dataloader(), 8)]
    assert len(with_workers) == 8 and all(torch.equal(a, b) for a, b in zip(with_workers, alone))
    assert sum(int((y != -100).sum()) for _, y in dm.val_dataloader()) == len(dm.val_ids) - 1


def test_streamed_hugging_face_dataset_is_measured_once(tmp_path, monkeypatch):
    pytest.importorskip("datasets", reason="the optional `datasets` package is not installed")
    (tmp_path / "hub").mkdir()
    rows = [f"document {i}: {LINES[:300]}" for i in range(12)]
    (tmp_path / "hub" / "part.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    spec = {"path": str(tmp_path / "hub"), "streaming": True}
    dm = data(tmp_path, hf_dataset=spec)
    dm.setup()
    assert dm.tokenizer.decode(dm.train_ids.tolist() + dm.val_ids.tolist()) == "\n\n".join(rows)
    monkeypatch.setattr(corpus_module.Corpus, "scan", lambda *a, **k: pytest.fail("measured again"))
    again = data(tmp_path, hf_dataset=spec)
    again.setup()  # the size is remembered in the cache, the tokens are cached
    assert again.cut == dm.cut and again.train_ids.tolist() == dm.train_ids.tolist()
    (tmp_path / "hub" / "part.jsonl").write_text('{"text": "broken\n')
    with pytest.raises(ConfigError, match=r"^data\.hf_dataset: cannot read .*hub: "):
        data(tmp_path / "other", hf_dataset=spec).setup()
