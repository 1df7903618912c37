"""The flat caption encoding (captioning.data.captions) equals Vocabulary.encode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from captioning.data.captions import EncodedCaptions
from captioning.data.records import ImageRecord
from captioning.vocab import Vocabulary


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
