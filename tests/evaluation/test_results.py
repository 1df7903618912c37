"""Reference and results files (captioning.evaluation.results)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_json

from captioning.errors import CaptioningError
from captioning.evaluation import load_references, load_results

# --------------------------------------------------------------------------- loaders


def test_load_references_and_results_roundtrip(tmp_path: Path) -> None:
    ann = {
        "images": [{"id": 5}, {"id": 3}, {"id": 4}],
        "annotations": [
            {"id": 1, "image_id": 3, "caption": "a cat"},
            {"id": 2, "image_id": 5, "caption": "a dog"},
            {"id": 3, "image_id": 3, "caption": "the cat"},
        ],
    }
    refs = load_references(write_json(tmp_path / "ann.json", ann))
    assert refs == {5: ["a dog"], 3: ["a cat", "the cat"]} and list(refs) == [5, 3]
    results = [{"image_id": 3, "caption": "cat"}, {"image_id": 5, "caption": "dog", "score": 1}]
    assert load_results(write_json(tmp_path / "res.json", results), refs) == {3: "cat", 5: "dog"}
    with pytest.raises(CaptioningError, match="cannot read"):
        load_references(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("entries", "pattern"),
    [
        ([{"image_id": 1, "caption": "a"}, {"image_id": 2, "caption": "b"}] * 2, "duplicate.*1, 2"),
        ([{"image_id": 1, "caption": "a"}, {"image_id": 2, "caption": "  \n"}], "empty.*2"),
        ([{"image_id": 1, "caption": "a"}, {"image_id": 42, "caption": "b"}], "not in the ref.*42"),
        ({"image_id": 1, "caption": "a"}, "JSON list"),
        ([{"image_id": 1, "caption": "a"}, {"image_id": 2}], "entries 1 "),
        ([{"image_id": "1", "caption": "a"}], "integer"),
    ],
)
def test_load_results_errors_name_the_culprits(tmp_path: Path, entries: object, pattern: str):
    with pytest.raises(CaptioningError, match=pattern) as info:
        load_results(write_json(tmp_path / "res.json", entries), {1: ["x"], 2: ["y"]})
    assert "\n" not in str(info.value)


def test_load_results_lists_at_most_ten_ids(tmp_path: Path) -> None:
    entries = [{"image_id": i, "caption": "a"} for i in range(100, 125)]
    with pytest.raises(CaptioningError, match=r"100, 101, .*109 and 15 more"):
        load_results(write_json(tmp_path / "res.json", entries), {1: ["x"]})


# --------------------------------------------------------------------------- bad input


BAD_RESULTS = {
    "unknown ids": (
        [
            {"image_id": 1, "caption": "a cat"},
            {"image_id": 777, "caption": "x"},
            {"image_id": 888, "caption": "y"},
        ],
        ["not in the references", "777, 888"],
    ),
    "duplicates": (
        [{"image_id": 2, "caption": "a cat"}, {"image_id": 2, "caption": "a dog"}],
        ["duplicate image ids 2"],
    ),
    "empty": (
        [{"image_id": 1, "caption": "a cat"}, {"image_id": 3, "caption": "  "}],
        ["empty captions for image ids 3"],
    ),
    "not a list": ({"image_id": 1}, ["JSON list"]),
}


@pytest.mark.parametrize("case", sorted(BAD_RESULTS))
def test_bad_results_files_are_one_line_errors(tmp_path: Path, small_refs: Path, case: str) -> None:
    entries, expected = BAD_RESULTS[case]
    results = write_json(tmp_path / "res.json", entries)
    with pytest.raises(CaptioningError) as info:
        load_results(results, load_references(small_refs))
    message = str(info.value)
    assert "\n" not in message and str(results) in message
    assert all(text in message for text in expected)
    assert not (tmp_path / "res_scores.json").exists()
