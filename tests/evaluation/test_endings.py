"""Captions that end on a dangling word (captioning.evaluation.endings)."""

from __future__ import annotations

import json

import pytest

from captioning.evaluation.endings import (
    DANGLING_WORDS,
    count_endings,
    ending_report,
    ends_dangling,
)


@pytest.mark.parametrize(
    ("caption", "dangling"),
    [
        ("a man riding a horse on a", True),
        ("A man riding a horse on the.", True),
        ("a red circle and", True),
        ("a dog next to", True),
        ("a man riding a horse", False),
        ("a man looking up", False),  # a particle, not a preposition
        ("a car parked outside", False),
        ("", False),
    ],
)
def test_a_caption_ends_dangling_on_an_article_conjunction_or_preposition(caption, dangling):
    assert ends_dangling(caption) is dangling


def test_the_report_of_a_results_file(tmp_path):
    captions = ["a red circle on a", "a blue square", "two stars and", "a star on a", "a circle"]
    path = tmp_path / "test_results.json"
    path.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in enumerate(captions)]))
    report = ending_report(path)
    assert (report.captions, report.dangling, report.share) == (5, 3, 0.6)
    assert report.words == {"a": 2, "and": 1}
    assert count_endings([]).captions == 0
    assert {"a", "an", "the", "and", "or", "of", "on", "with", "to"} <= DANGLING_WORDS
    assert not {"up", "down", "outside", "it", "them"} & DANGLING_WORDS
