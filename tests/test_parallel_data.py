"""Parallel data: TSV (two columns or Tatoeba's three), line-aligned file pairs, errors with file:line,
direction, length filtering, teacher-forcing batches and length buckets."""
import random

import numpy as np
import pytest

from builder.train.data.parallel import BucketSampler, ParallelData, read_aligned, read_tsv
from builder.errors import ConfigError
from builder.pairs import special_ids

PAIRS = [("Go.", "Geh."), ("Hi.", "Hallo!"), ("Run!", "Lauf!"), ("Wow!", "Potzdonner!"), ("Fire!", "Feuer!"),
         ("Help!", "Hilfe!"), ("Stop!", "Stopp!"), ("Wait!", "Warte!"), ("I see.", "Aha."), ("Really?", "Echt?")]


def write_tsv(path, pairs, attribution=False):
    extra = "\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272 (CM) & #8597805 (Roujin)" if attribution else ""
    path.write_text("".join(f"{s}\t{t}{extra}\n" for s, t in pairs), encoding="utf-8")
    return str(path)


def lists(dm):
    return {split: list(pairs) for split, pairs in dm.pairs.items()}


def data(**cfg):
    base = {"name": "parallel", "val_size": 2, "test_size": 2, "seed": 0, "batch_size": 4,
            "tokenizer": {"kind": "char"}}
    dm = ParallelData({**base, **cfg})
    dm.setup()
    return dm


@pytest.mark.parametrize("attribution", [False, True])
def test_tsv_two_and_three_columns(tmp_path, attribution):
    path = write_tsv(tmp_path / "deu.txt", PAIRS, attribution)
    assert read_tsv(path) == PAIRS
    dm = data(train=path)
    assert {k: len(v) for k, v in dm.pairs.items()} == {"val": 2, "test": 2, "train": 6}
    pairs = lists(dm)
    assert sorted(pairs["val"] + pairs["test"] + pairs["train"]) == sorted(PAIRS)  # held out, not duplicated
    assert lists(data(train=path)) == pairs  # fixed by data.seed
    order = list(range(len(PAIRS)))
    random.Random(0).shuffle(order)  # the held-out pairs are those of a shuffled list, in its order
    assert pairs["val"] == [PAIRS[i] for i in order[:2]] and pairs["test"] == [PAIRS[i] for i in order[2:4]]
    assert pairs["train"] == [PAIRS[i] for i in sorted(order[4:])]


def test_two_aligned_files_and_explicit_splits(tmp_path):
    (tmp_path / "en").write_text("\n".join(s for s, _ in PAIRS) + "\n", encoding="utf-8")
    (tmp_path / "de").write_text("\n".join(t for _, t in PAIRS) + "\n", encoding="utf-8")
    files = [str(tmp_path / "en"), str(tmp_path / "de")]
    assert read_aligned(*files) == PAIRS
    dm = data(train=files, val=write_tsv(tmp_path / "v.tsv", PAIRS[:3]), test=files)
    assert lists(dm) == {"train": PAIRS, "val": PAIRS[:3], "test": PAIRS}


def test_malformed_lines_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("Go.\tGeh.\nno tab here\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.tsv:2: expected 'source<TAB>target'"):
        read_tsv(bad)
    bad.write_text("Go.\tGeh.\n\ta\tb\tc\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.tsv:2:"):
        read_tsv(bad)
    (tmp_path / "en").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "de").write_text("a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="2 lines but .* has 1"):
        read_aligned(tmp_path / "en", tmp_path / "de")
    (tmp_path / "de").write_text("a\n \n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"de:2: empty line"):
        read_aligned(tmp_path / "en", tmp_path / "de")
    with pytest.raises(ConfigError, match="data.train: file not found"):
        data(train=str(tmp_path / "missing.tsv"))


def test_reverse_swaps_direction(tmp_path):
    path = write_tsv(tmp_path / "deu.txt", PAIRS)
    fwd, rev = data(train=path), data(train=path, reverse=True)
    assert list(rev.pairs["train"]) == [(t, s) for s, t in fwd.pairs["train"]]
    assert "z" in rev.src_tok.tok.get_vocab() and "z" not in fwd.src_tok.tok.get_vocab()  # Potzdonner: German


def test_batches_teacher_forcing_and_length_filter(tmp_path):
    path = write_tsv(tmp_path / "deu.txt", PAIRS)
    dm = data(train=path, max_tgt_len=6, tokenizer={"kind": "char", "shared": True})
    assert dm.src_tok is dm.tgt_tok  # shared
    assert all(len(t) <= 6 for _, t, _ in dm.ids["train"])  # "Potzdonner!" and the like are dropped
    pad, bos, eos = special_ids(dm.tgt_tok)
    batch = next(iter(dm.train_dataloader()))
    tgt_in, labels, tgt_pad = batch["tgt_in"], batch["labels"], batch["tgt_pad"]  # (B, T) each
    assert (tgt_in[:, 0] == bos).all()
    real = ~tgt_pad
    assert ((labels != -100) == real).all()  # a label for every real decoder position
    assert (labels[:, :-1][real[:, 1:]] == tgt_in[:, 1:][real[:, 1:]]).all()  # shifted by one
    lengths = real.sum(1) - 1  # target tokens without <s>
    assert (labels[range(len(lengths)), lengths] == eos).all()
    for row, ref in zip(labels.tolist(), batch["refs"]):
        assert dm.tgt_tok.decode([t for t in row if t not in (-100, eos)]) == ref
    assert (batch["src"][batch["src_pad"]] == pad).all()


def test_bucket_sampler_groups_lengths_and_reshuffles():
    lengths = [i % 17 for i in range(400)]
    s = BucketSampler(lengths, batch_size=8, shuffle=True, seed=0, pool=10)
    first = s.batches()
    assert sorted(i for b in first for i in b) == list(range(400)) and len(first) == len(s)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first) / len(first)
    assert spread < 4  # random batches of 8 would span ~13
    s.set_epoch(1)
    assert s.batches() != first
    evaluation = BucketSampler(lengths, batch_size=8, shuffle=False).batches()
    assert [lengths[i] for b in evaluation for i in b] == sorted(lengths)


def test_existing_tokenizer_file(tmp_path):
    from builder.pairs import tokenizers_to_str
    path = write_tsv(tmp_path / "deu.txt", PAIRS)
    first = data(train=path)
    (tmp_path / "tokenizer.json").write_text(tokenizers_to_str(first.src_tok, first.tgt_tok))
    again = data(train=path, tokenizer={"path": str(tmp_path / "tokenizer.json")})
    assert again.src_tok.to_str() == first.src_tok.to_str() and again.tgt_tok.to_str() == first.tgt_tok.to_str()
    assert all(list(again.ids[split]) == list(first.ids[split]) for split in first.ids)


def test_numbers_preset_trains_on_a_users_tsv_given_as_data_path(tmp_path):
    from builder.train.data.numbers import NumbersData
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"cat {i}\tKatze {i}\n" for i in range(30)))
    data = NumbersData({"name": "numbers", "path": str(tsv), "n_val": 5, "n_test": 5, "seed": 0,
                        "tokenizer": {"kind": "char"}, "batch_size": 4})
    pairs = data.read_pairs()
    assert [len(pairs[s]) for s in ("train", "val", "test")] == [20, 5, 5]
    assert all(src.startswith("cat ") and tgt.startswith("Katze ") for src, tgt in pairs["train"])


def test_byte_order_mark_and_windows_line_ends(tmp_path):
    tsv = tmp_path / "bom.tsv"
    tsv.write_bytes(b"\xef\xbb\xbf" + "".join(f"{s}\t{t}\r\n" for s, t in PAIRS).encode())
    assert read_tsv(tsv) == PAIRS
    (tmp_path / "en").write_bytes(b"\xef\xbb\xbf" + "".join(f"{s}\r\n" for s, _ in PAIRS).encode())
    (tmp_path / "de").write_bytes("".join(f"{t}\u2028\r\n" if i == 0 else f"{t}\r\n"
                                          for i, (_, t) in enumerate(PAIRS)).encode())
    assert read_aligned(tmp_path / "en", tmp_path / "de") == PAIRS  # U+2028 inside a sentence is no line end
    dm = data(train=str(tsv))
    assert not {"\ufeff", "\r"} & (set(dm.src_tok.tok.get_vocab()) | set(dm.tgt_tok.tok.get_vocab()))
    (tmp_path / "latin1.tsv").write_bytes("Tür\tdoor\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.tsv: not UTF-8 text: byte 0xfc at offset 1"):
        read_tsv(tmp_path / "latin1.tsv")


def test_given_tokenizer_that_lacks_characters_or_is_not_one(tmp_path):
    from builder.tokenizer import char_tokenizer
    path = write_tsv(tmp_path / "deu.txt", PAIRS)
    char_tokenizer("".join(s + t for s, t in PAIRS).replace("!", "")).save(tmp_path / "tokenizer.json")
    with pytest.raises(ConfigError, match=r"^data\.tokenizer\.path: .*tokenizer\.json cannot encode a character of the "
                                          r"source sentences: '!' \d+ times?; give a tokenizer that covers them"):
        data(train=path, tokenizer={"path": str(tmp_path / "tokenizer.json")})
    (tmp_path / "notes.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"^data\.tokenizer\.path: .*notes\.json is not a tokenizer\.json: "):
        data(train=path, tokenizer={"path": str(tmp_path / "notes.json")})


def test_large_tsv_is_read_and_encoded_in_batches(tmp_path, monkeypatch):
    from builder.train.data import pair_files, parallel
    many = [(f"{s} {i}", f"{t} {i}") for i in range(60) for s, t in PAIRS]
    path = write_tsv(tmp_path / "big.tsv", many)
    monkeypatch.setattr(parallel, "BATCH", 50)
    sizes, encode = [], pair_files.encode_flat

    def recording(tok, texts, dtype):
        sizes.append(len(texts))
        return encode(tok, texts, dtype)
    monkeypatch.setattr(parallel, "encode_flat", recording)
    for kind in ("char", "bpe"):
        sizes.clear()
        dm = data(train=path, val_size=20, test_size=20, tokenizer={"kind": kind, "vocab_size": 300})
        assert max(sizes) == 50 and sum(sizes) == 2 * len(many)  # both sides, 50 pairs at a time
        pairs = lists(dm)
        for split in ("train", "val", "test"):
            items = list(dm.ids[split])
            assert [(s, t) for s, t, _ in items] == [(dm.src_tok.encode(s), dm.tgt_tok.encode(t)) for s, t in pairs[split]]
            assert [r for _, _, r in items] == [t for _, t in pairs[split]]  # training refs decoded from the ids
        assert dm.ids["train"].src.dtype == np.uint16  # flat arrays, not a list per pair


def test_lines_are_counted_and_read_without_holding_the_file(tmp_path):
    from builder.train.data.pair_files import PairFile, count_lines, read_lines
    for content in (b"", b"a", b"a\n", b"a\n\n", b"a\r\nb", b"\xef\xbb\xbfa\r\n\n b \n"):
        (tmp_path / "f").write_bytes(content)
        assert count_lines(tmp_path / "f") == len(read_lines(tmp_path / "f")), content
    assert read_lines(tmp_path / "f") == ["a", "", " b "]
    pairs = PairFile(write_tsv(tmp_path / "p.tsv", PAIRS), "train")
    assert len(pairs) == len(PAIRS) and list(pairs) == list(pairs) == PAIRS  # read again on each pass
