"""The tokenizer (captioning.text)."""

from __future__ import annotations

import random
import string

import pytest

from captioning.text import has_words, tokenize, tokenize_chunks

ODD = "\x00\x01\x1c\x1d\x1e\x1f\x85\xa0éİßⅣ٣—’'_"


def per_caption(captions: list[str], chunk_size: int) -> list[list[str]]:
    out = []
    for tokens, counts in tokenize_chunks(captions, chunk_size):
        assert len(tokens) == counts.sum() and counts.dtype.name == "int64"
        start = 0
        for n in counts.tolist():
            out.append(tokens[start : start + n])
            start += n
    return out


@pytest.mark.parametrize(
    "alphabet", [string.printable, string.printable + ODD, string.ascii_letters + " .,_-'"]
)
def test_tokenize_chunks_equals_tokenize(alphabet):
    rng = random.Random(len(alphabet))
    captions = ["".join(rng.choices(alphabet, k=rng.randint(0, 40))) for _ in range(3000)]
    captions += ["A man's T-shirt, 3.5 __ _a_ b__", "", " . ", "Café AU lait", "x\x00y", "__"]
    expected = [tokenize(c) for c in captions]
    for chunk_size in (1, 7, 1000, 10_000):
        assert per_caption(captions, chunk_size) == expected
    assert [has_words(c) for c in captions] == [bool(t) for t in expected]
    assert list(tokenize_chunks([])) == []


# --------------------------------------------------------------------------- tokenizer


def test_tokenize() -> None:
    assert tokenize("A Man, riding a horse.") == ["a", "man", "riding", "a", "horse"]
    assert tokenize("The man's T-shirt!") == ["the", "man", "s", "t", "shirt"]
    assert tokenize("man’s café") == ["man", "s", "café"]
    assert tokenize(" ... ") == []
