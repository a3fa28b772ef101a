"""The built-in number data: English and German word forms, and fixed, disjoint splits."""
import pytest

from builder.train.data.numbers import english, german, splits

GERMAN = {
    0: "null", 1: "eins", 2: "zwei", 11: "elf", 12: "zwölf", 16: "sechzehn", 17: "siebzehn", 21: "einundzwanzig",
    30: "dreißig", 70: "siebzig", 99: "neunundneunzig", 100: "einhundert", 101: "einhunderteins",
    111: "einhundertelf", 121: "einhunderteinundzwanzig", 200: "zweihundert", 321: "dreihunderteinundzwanzig",
    1000: "eintausend", 1001: "eintausendeins", 1100: "eintausendeinhundert", 2001: "zweitausendeins",
    21000: "einundzwanzigtausend", 101000: "einhunderteintausend",
    616717: "sechshundertsechzehntausendsiebenhundertsiebzehn",
    999999: "neunhundertneunundneunzigtausendneunhundertneunundneunzig",
}
ENGLISH = {
    0: "zero", 1: "one", 13: "thirteen", 21: "twenty-one", 40: "forty", 100: "one hundred", 101: "one hundred one",
    321: "three hundred twenty-one", 1000: "one thousand", 1100: "one thousand one hundred",
    20019: "twenty thousand nineteen", 999999: "nine hundred ninety-nine thousand nine hundred ninety-nine",
}


@pytest.mark.parametrize("n, word", sorted(GERMAN.items()))
def test_german_forms(n, word):
    assert german(n) == word


@pytest.mark.parametrize("n, words", sorted(ENGLISH.items()))
def test_english_forms(n, words):
    assert english(n) == words


def test_every_number_has_distinct_words():
    words = [english(n) for n in range(0, 1_000_000, 7)]
    assert len(set(words)) == len(words)
    assert all(" and " not in w and "  " not in w for w in words)  # American style: no "and"


def test_out_of_range():
    with pytest.raises(ValueError):
        german(1_000_000)
    with pytest.raises(ValueError):
        english(-1)


def test_splits_are_disjoint_fixed_and_cover_every_length():
    a, b = splits(3, n_train=6000), splits(3, n_train=6000)
    assert a == b  # fixed by the seed
    assert splits(4, n_train=6000)["val"] != a["val"]
    assert len(a["val"]) == len(a["test"]) == 1000 and len(a["train"]) == 6000
    train, val, test = set(a["train"]), set(a["val"]), set(a["test"])
    assert not train & val and not train & test and not val & test
    assert len(val) == len(test) == 1000  # no repeats among held-out numbers
    digits = [len(str(n)) for n in a["train"]]
    assert all(800 < digits.count(d) < 1200 for d in range(1, 7))  # every length about equally often
    assert set(range(10)) <= train
