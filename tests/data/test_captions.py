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


# --------------------------------------------------------------------------- tokenized once


def test_tokenized_captions_give_the_same_vocabulary_and_encodings():
    from captioning.data.captions import TokenizedCaptions

    recs = records(
        [
            ["A red circle.", "a red ball near a blue ball"],
            ["Naïve café, très bien", "?!", "a red circle"],  # non-ASCII; no word
            [],
            ["one __ under_score", "red red red"],
        ]
    )
    tokens = TokenizedCaptions(recs)
    captions = [c for r in recs for c in r.captions]
    for min_count in (1, 2, 3):
        built = Vocabulary.build(captions, min_count=min_count)
        assert Vocabulary.from_counts(tokens.word_counts(), min_count=min_count) == built
        for max_len in (None, 2):
            once = EncodedCaptions(recs, built, max_len=max_len, tokens=tokens)
            again = EncodedCaptions(recs, built, max_len=max_len)
            assert (once.ids == again.ids).all() and (once.starts == again.starts).all()
            assert (once.first == again.first).all()
    with pytest.raises(ValueError, match="other records"):
        EncodedCaptions(recs[:2], Vocabulary.build(captions), tokens=tokens)


def test_tokenized_captions_by_record_are_tokenize_of_each_caption():
    """What self-critical training's reward takes as references: each record's captions as
    :func:`tokenize` gives them (ASCII ones went through the chunked tokenizer)."""
    from captioning.data.captions import TokenizedCaptions
    from captioning.text import tokenize

    recs = records(
        [
            ["A red circle.", "a man's t-shirt, 3.5 <end>"],
            ["Naïve café, très bien", "?!", ""],  # non-ASCII; captions left with no word
            [],
            ["one __ under_score", "nul\x00inside"],
        ]
    )
    by_record = TokenizedCaptions(recs).by_record()
    assert by_record == [[tuple(tokenize(c)) for c in r.captions] for r in recs]
    assert by_record[0][1] == ("a", "man", "s", "t", "shirt", "3", "5", "end")
    assert TokenizedCaptions([]).by_record() == []


def test_a_run_set_up_tokenizes_each_training_caption_once(shapes_root, tmp_path, monkeypatch):
    """The vocabulary and the encoded captions come from one tokenization (fails if two)."""
    from collections import Counter

    from helpers import count_tokenizations, small_cfg

    from captioning.distributed import DistContext
    from captioning.training.config import parse_config
    from captioning.training.objectives import build_objective
    from captioning.training.setup import set_up_run

    seen = count_tokenizations(monkeypatch)
    config = parse_config(small_cfg(shapes_root, "data.feature_cache=false"))
    run = set_up_run(
        config,
        run_dir=tmp_path / "run",
        resume=None,
        device=torch.device("cpu"),
        ctx=DistContext(),
        objective=build_objective(config.objective),
    )
    assert run is not None
    train = Counter(c for r in run.records["train"] for c in r.captions)
    assert sum(train.values()) > 100
    assert {c: seen[c] for c in train} == dict(train)  # each caption once (repeats: as often)
