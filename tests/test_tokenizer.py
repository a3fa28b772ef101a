"""Tokenizers: character level and byte-level BPE round trips, serialisation, clear errors."""
import pytest

from builder.tokenizer import (EOT, Tokenizer, alphabet_tokenizer, bpe_tokenizer, byte_cap, char_tokenizer, chunks,
                               count_chars, describe_missing, train_tokenizer)

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\r\n\tAll: Speak, speak! « déjà vu » 😀\n"


def test_char_tokenizer_round_trip_and_sorted_ids():
    tok = char_tokenizer(TEXT)
    assert tok.kind == "char"
    assert tok.vocab_size == len(set(TEXT))
    ids = tok.encode(TEXT)
    assert len(ids) == len(TEXT)  # one token per character, newlines and emoji included
    assert tok.decode(ids) == TEXT
    assert tok.encode("\t\n") == [sorted(set(TEXT)).index("\t"), sorted(set(TEXT)).index("\n")]


def test_char_tokenizer_names_unknown_characters():
    tok = char_tokenizer("abc")
    with pytest.raises(ValueError, match="'xz'"):
        tok.encode("axbz")


def test_bpe_round_trip_on_unseen_text():
    tok = bpe_tokenizer([TEXT * 20], vocab_size=300)
    assert tok.kind == "bpe"
    assert tok.eos_id is not None and tok.decode([tok.eos_id]) == EOT
    assert 256 < tok.vocab_size <= 300
    unseen = "Zürich — 東京 🚀 never seen before\n"
    assert tok.decode(tok.encode(unseen)) == unseen  # bytes cover every character
    assert len(tok.encode(TEXT)) < len(TEXT.encode())  # merges were learnt


def test_serialisation_through_string_and_file(tmp_path):
    for tok in (char_tokenizer(TEXT), train_tokenizer("bpe", TEXT * 5, TEXT * 5, vocab_size=280)):
        again = Tokenizer.from_str(tok.to_str())
        assert again.kind == tok.kind and again.encode(TEXT) == tok.encode(TEXT)
        tok.save(tmp_path / "tokenizer.json")
        assert Tokenizer.load(tmp_path).encode(TEXT) == tok.encode(TEXT)  # a directory means its tokenizer.json
    with pytest.raises(FileNotFoundError, match="nope.json"):
        Tokenizer.load(tmp_path / "nope.json")


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown kind 'word'.*char, bpe"):
        train_tokenizer("word", TEXT, TEXT)


def test_missing_characters_whether_the_tokenizer_fails_or_drops_them():
    from tokenizers import Tokenizer as HFTokenizer, models, pre_tokenizers
    assert char_tokenizer("abc").missing("abxcz") == ["x", "z"]
    assert bpe_tokenizer([TEXT], vocab_size=270).missing(sorted(set(TEXT + "東京🚀"))) == []  # bytes cover all
    plain = HFTokenizer(models.BPE(vocab={c: i for i, c in enumerate("abc")}, merges=[]))  # no [UNK]: drops
    plain.pre_tokenizer = pre_tokenizers.Whitespace()
    assert Tokenizer(plain).missing("ab x\n") == ["x"]  # spaces are removed by design, not missing
    assert Tokenizer(plain).encode("axb") == Tokenizer(plain).encode("ab")  # what the check guards against


@pytest.mark.parametrize("case, message", [
    ("pair", r"pair\.json holds a translation run's two tokenizers \(source and target\), not one"),
    ("text", r"text\.txt is not a tokenizer\.json: not JSON \(Expecting value: line 1 column 1"),
    ("json", r"other\.json is not a tokenizer\.json: it has no 'model' entry \(it holds the keys vocab_size\)"),
    ("dir", r"the directory .*empty holds no tokenizer\.json"),
])
def test_load_names_what_the_file_is_instead(tmp_path, case, message):
    from builder.pairs import tokenizers_to_str
    files = {"pair": ("pair.json", tokenizers_to_str(char_tokenizer("ab"), char_tokenizer("cd"))),
             "text": ("text.txt", "just some words\n"), "json": ("other.json", '{"vocab_size": 3}')}
    if case == "dir":
        (tmp_path / "empty").mkdir()
        path = tmp_path / "empty"
    else:
        name, content = files[case]
        path = tmp_path / name
        path.write_text(content)
    error = FileNotFoundError if case == "dir" else ValueError
    with pytest.raises(error, match=message) as e:
        Tokenizer.load(path)
    assert "\n" not in str(e.value)


def test_encode_array_gives_the_ids_of_encode():
    import numpy as np
    text = (TEXT * 40).replace("\r", "")
    char, bpe = char_tokenizer(text), bpe_tokenizer([text], vocab_size=300)
    assert char.char_table() is not None and bpe.char_table() is None  # characters by table lookup
    for tok in (char, bpe):
        ids = tok.encode_array(text, np.uint16)
        assert ids.dtype == np.uint16 and ids.tolist() == tok.encode(text)
    with pytest.raises(ValueError, match=r"not in the tokenizer's alphabet: 'Zü'"):
        char.encode_array("Zürich", np.uint16)
    from builder.pairs import with_specials
    assert with_specials(char_tokenizer("ab")).char_table() is None  # "<s>" in a text is one token there


def test_safe_end_cuts_where_the_pieces_encode_like_the_whole():
    bpe = bpe_tokenizer([TEXT * 20], vocab_size=300)
    text = "one line\n  indented\n\nnext paragraph\nlast"
    end = bpe.safe_end(text)
    assert text[:end] == "one line\n  indented\n\nnext paragraph\n"
    assert bpe.encode(text[:end]) + bpe.encode(text[end:]) == bpe.encode(text)
    assert bpe.safe_end("no newline at all") == 0 and char_tokenizer("ab").safe_end("ab\nb") == 4
    assert "".join(chunks(text * 50, size=30)) == text * 50


def test_training_from_pieces_equals_training_from_the_whole_text():
    pieces = [TEXT * 3, "Zürich\n", TEXT]
    whole = "".join(pieces)
    assert train_tokenizer("char", "", iter(pieces)).to_str() == char_tokenizer(whole).to_str()
    assert alphabet_tokenizer("cab").to_str() == char_tokenizer("abcabc").to_str()
    from_pieces = train_tokenizer("bpe", iter(pieces), "", vocab_size=290)
    assert from_pieces.to_str() == train_tokenizer("bpe", whole, whole, vocab_size=290).to_str()


def test_byte_cap_and_counts_for_missing_characters():
    assert byte_cap(None) is None and byte_cap(1e8) == 100_000_000 and byte_cap("2000") == 2000
    for bad in (0, -5, "lots"):
        with pytest.raises(ValueError, match=r"^data\.tokenizer\.train_bytes: expected a positive number"):
            byte_cap(bad)
    counts = count_chars(["aéé", "é b"], ["é", "b"])
    assert counts == {"é": 3, "b": 1}
    assert describe_missing(["b", "é"], counts, "here") == describe_missing(["b", "é"], "aéé" + "é b", "here")
