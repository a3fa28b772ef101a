"""Built-in translation data: English number words -> German number words, for 0 .. 999,999.

    321    "three hundred twenty-one"  -> "dreihunderteinundzwanzig"
    1001   "one thousand one"          -> "eintausendeins"

English is American style (no "and", hyphenated tens); German uses the standard written forms
("eins" at the end, "ein" before "und", "hundert" and "tausend"; "einhundert", "eintausend").
Validation and test sets are 1,000 numbers each, uniform over the range and fixed by `data.seed`; training
draws numbers of every length equally often, never a held-out one.

    python -m builder.train.data.numbers 321 1001   # prints the pairs
"""
from __future__ import annotations

import random

from builder.train.data.parallel import ParallelData

EN_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
           "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
DE_ONES = ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn", "elf", "zwölf",
           "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn", "achtzehn", "neunzehn"]
DE_TENS = ["", "", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig"]
LIMIT = 1_000_000


def english(n: int) -> str:
    if not 0 <= n < LIMIT:
        raise ValueError(f"english: {n} is outside 0..{LIMIT - 1}")
    if n == 0:
        return "zero"
    thousands, rest = divmod(n, 1000)
    words = [_en_below_1000(thousands), "thousand"] if thousands else []
    return " ".join(words + ([_en_below_1000(rest)] if rest else []))


def _en_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    words = [EN_ONES[hundreds], "hundred"] if hundreds else []
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(EN_TENS[tens] + (f"-{EN_ONES[ones]}" if ones else ""))
    elif rest:
        words.append(EN_ONES[rest])
    return " ".join(words)


def german(n: int) -> str:
    if not 0 <= n < LIMIT:
        raise ValueError(f"german: {n} is outside 0..{LIMIT - 1}")
    if n == 0:
        return "null"
    thousands, rest = divmod(n, 1000)
    return (_de_below_1000(thousands, final=False) + "tausend" if thousands else "") + _de_below_1000(rest, final=True)


def _de_below_1000(n: int, final: bool) -> str:
    """`final`: nothing follows, so a last 1 is "eins"; before "tausend" it is "ein" (eintausend)."""
    hundreds, rest = divmod(n, 100)
    word = ("ein" if hundreds == 1 else DE_ONES[hundreds]) + "hundert" if hundreds else ""
    if rest == 1:
        return word + ("eins" if final else "ein")
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        unit = "ein" if ones == 1 else DE_ONES[ones]  # einundzwanzig
        return word + (f"{unit}und" if ones else "") + DE_TENS[tens]
    return word + (DE_ONES[rest] if rest else "")


def splits(seed: int, n_val: int = 1000, n_test: int = 1000, n_train: int = 200_000) -> dict[str, list[int]]:
    """Disjoint number lists {train, val, test}, fixed by `seed`; val and test are uniform over 0..999,999.

    Each training number has a digit count drawn uniformly from 1..6, then a value of that many digits:
    a uniform draw would be 90% six-digit numbers and show "seventeen" alone about once in 10^6 draws.
    Small numbers therefore repeat in the training list; none of the held-out numbers appears in it.
    """
    rng = random.Random(seed)
    held = rng.sample(range(LIMIT), n_val + n_test)
    taken = set(held)
    train: list[int] = []
    while len(train) < n_train:
        digits = rng.randint(1, 6)
        n = rng.randrange(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits)
        if n not in taken:
            train.append(n)
    return {"train": train, "val": held[:n_val], "test": held[n_val:]}


def pairs(numbers: list[int]) -> list[tuple[str, str]]:
    return [(english(n), german(n)) for n in numbers]


class NumbersData(ParallelData):
    """The number pairs as parallel data: the same tokenizers, batching and `reverse` switch as user data."""

    def read_pairs(self) -> dict[str, list[tuple[str, str]]]:
        c = self.cfg
        if c.get("path"):  # the user's own pairs instead, with n_val and n_test pairs held out
            self.cfg = {**c, "train": c["path"], "val_size": c.get("n_val", 1000), "test_size": c.get("n_test", 1000)}
            return super().read_pairs()
        nums = splits(int(c.get("seed", 0)), int(c.get("n_val", 1000)), int(c.get("n_test", 1000)),
                      int(c.get("n_train", 200_000)))
        return {split: pairs(ns) for split, ns in nums.items()}


if __name__ == "__main__":
    import sys
    for arg in sys.argv[1:] or ["0", "1", "21", "101", "1001", "321", "999999"]:
        print(f"{int(arg):>7}  {english(int(arg))}  ->  {german(int(arg))}")
