"""Captions tokenized in chunks give exactly :func:`tokenize`'s tokens, and the flat encoding gives
exactly ``Vocabulary.encode``'s ids, so the fast path changes nothing a model sees."""

from __future__ import annotations

import random
import string
from pathlib import Path

import pytest
import torch

from captioning.data.captions import EncodedCaptions
from captioning.data.datasets import CaptionDataset
from captioning.data.features import FeatureCaptionDataset
from captioning.data.records import ImageRecord
from captioning.text import has_words, tokenize, tokenize_chunks
from captioning.vocab import Vocabulary

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


def records(captions: list[list[str]]) -> list[ImageRecord]:
    return [ImageRecord(k + 1, Path(f"{k}.png"), tuple(c)) for k, c in enumerate(captions)]


@pytest.mark.parametrize("max_len", [None, 1, 3])
def test_encoded_captions_equal_vocabulary_encode(max_len):
    recs = records(
        [
            ["A red circle.", "a red ball near a blue ball"],
            ["Naïve café, très bien", "?!"],  # non-ASCII; a caption left with no word
            ["one"],
        ]
    )
    vocab = Vocabulary.build(["a red circle ball blue near café one"])
    encoded = EncodedCaptions(recs, vocab, max_len=max_len)
    assert len(encoded) == 5
    for k, record in enumerate(recs):
        got = encoded.image(k)
        want = [vocab.encode(c, max_len=max_len) for c in record.captions]
        assert [t.tolist() for t in got] == want
        assert all(t.dtype == torch.long for t in got)
    assert encoded.ids.dtype.name == "int32"  # one flat array, not a tensor per caption
    assert len(EncodedCaptions([], vocab)) == 0


def test_datasets_keep_their_item_format(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    recs = [ImageRecord(7, tmp_path / "a.png", ("a red ball", "the ball"))]
    vocab = Vocabulary.build(["a red ball the"])
    data = CaptionDataset(recs, vocab, lambda image: torch.zeros(3, 2, 2))
    image, captions, image_id = data[0]
    assert image.shape == (3, 2, 2) and image_id == 7 and data.num_captions == 2
    assert [vocab.decode(c) for c in captions] == ["a red ball", "the ball"]

    class Store:
        image_ids, skipped, folder = [7], {}, "cache"

        def __getitem__(self, row):
            return "features"

    cached = FeatureCaptionDataset(Store(), recs, vocab, max_len=1)
    assert cached[0][0] == "features" and [c.tolist() for c in cached[0][1]] == [
        vocab.encode("a", max_len=1),
        vocab.encode("the", max_len=1),
    ]
