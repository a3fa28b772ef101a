"""Tokenizers: character level and byte-level BPE round trips, serialisation, clear errors."""
import pytest

from builder.tokenizer import EOT, Tokenizer, bpe_tokenizer, char_tokenizer, train_tokenizer

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
