"""Tests for captioning.vocab."""

import pytest

from captioning.errors import CaptioningError
from captioning.vocab import SPECIALS, Vocabulary


def test_specials_fixed_ids():
    vocab = Vocabulary.build(["a red circle", "a blue square"])
    assert vocab.to_list()[:4] == list(SPECIALS)
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)


def test_encode_decode_round_trip_and_unk():
    vocab = Vocabulary.build(["A red circle.", "a red square", "a blue square"], min_count=2)
    ids = vocab.encode("a red square")
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    assert vocab.decode(ids) == "a red square"
    # "blue" and "circle" were seen once: below min_count -> <unk>
    assert "blue" not in vocab and "circle" not in vocab
    assert vocab.decode(vocab.encode("a blue circle")) == "a <unk> <unk>"
    # decoding stops at <end> and ignores <pad>
    assert vocab.decode([*vocab.encode("a red"), 0, 0, vocab.token_to_id("square")]) == "a red"


def test_deterministic_order_and_max_len():
    captions = ["b b a", "c a b"]
    assert (
        Vocabulary.build(captions).to_list() == Vocabulary.build(list(reversed(captions))).to_list()
    )
    assert Vocabulary.build(captions).to_list()[4:] == ["b", "a", "c"]  # by count, ties a-z
    vocab = Vocabulary.build(captions)
    assert len(vocab.encode("a b c a b", max_len=2)) == 4


def test_json_round_trip(tmp_path):
    vocab = Vocabulary.build(["a red circle", "a blue square"])
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(CaptioningError, match="empty"):
        Vocabulary.build([])
    with pytest.raises(CaptioningError, match="not found"):
        Vocabulary.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(CaptioningError, match="not valid JSON"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(CaptioningError, match="must start with"):
        Vocabulary(["a", "b"])
