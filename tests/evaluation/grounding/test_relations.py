"""Spatial relations on the shapes data (captioning.evaluation.grounding.relations)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from captioning.data.shapes import ShapeObject
from captioning.evaluation.grounding import Relation, load_shapes_truth, shapes_grounding

# a red circle straight above a blue square (centres 60 px apart vertically, same column)
ABOVE = [
    ShapeObject("circle", "red", "small", 10, 10, 20),
    ShapeObject("square", "blue", "small", 10, 70, 20),
]
OPPOSITE = {"left": "right of", "right": "left of", "above": "below", "below": "above"}


def test_relation_accuracy_counts_true_and_false_relations_and_skips_the_rest() -> None:
    predictions = {
        1: "a red circle is above a blue square",  # holds
        2: "a big red circle to the left of a blue square",  # false: it is above
        3: "two shapes : a red circle and a blue square",  # no relation: not counted
        4: "a red circle below a green triangle",  # no green triangle: not scored
    }
    report = shapes_grounding(predictions, dict.fromkeys(predictions, ABOVE))
    assert report.scores["shapes_relation_accuracy"] == 1 / 2
    assert (report.totals["relations"], report.totals["relations_held"]) == (2, 1)
    assert report.totals["relations_unscored"] == 1
    first, second, third, fourth = (report.per_image[i].relations for i in (1, 2, 3, 4))
    assert first == (Relation("red circle", "above", "blue square", 4, 5, True),)
    assert second == (Relation("red circle", "left", "blue square", 4, 8, False),)
    assert third == ()
    assert fourth == (Relation("red circle", "below", "green triangle", 3, 4, None),)


def test_captions_without_a_relation_are_not_counted() -> None:
    predictions = {1: "a red circle and a blue square", 2: "there is a red circle"}
    report = shapes_grounding(predictions, dict.fromkeys(predictions, ABOVE))
    assert math.isnan(report.scores["shapes_relation_accuracy"])
    assert report.totals["relations"] == 0


@pytest.mark.parametrize(
    ("caption", "holds"),
    [
        ("a red circle is to the left of a blue square", True),
        ("a red circle left of a blue square", True),
        ("a red circle is above a blue square", False),
        ("a blue square is to the right of a red circle", True),
        ("a blue square below a red circle", False),
    ],
)
def test_relations_are_decided_as_the_generator_decides_them_ties_going_left_right(
    caption: str, holds: bool
) -> None:
    # centres 30 px apart on both axes: the generator's relation() says left / right
    tie = [
        ShapeObject("circle", "red", "small", 0, 0, 20),
        ShapeObject("square", "blue", "small", 30, 30, 20),
    ]
    report = shapes_grounding({1: caption}, {1: tie})
    assert [r.holds for r in report.per_image[1].relations] == [holds]


def test_words_between_the_mentions_and_the_phrase_break_the_statement() -> None:
    report = shapes_grounding(
        {1: "a red circle and a blue square above"}, {1: ABOVE}
    )  # "above" ends the caption: no second object
    assert report.per_image[1].relations == ()
    report = shapes_grounding({1: "a red circle , big above a blue square"}, {1: ABOVE})
    assert report.per_image[1].relations == ()


def test_real_shapes_images_own_references_score_one_and_swapped_ones_zero(
    shapes_root: Path,
) -> None:
    path = shapes_root / "annotations" / "captions_test.json"
    truth = load_shapes_truth(path)
    references = [
        (a["image_id"], a["caption"]) for a in json.loads(path.read_text())["annotations"]
    ]
    predictions = {k: caption for k, (_, caption) in enumerate(references)}
    objects = {k: truth.objects[image_id] for k, (image_id, _) in enumerate(references)}
    report = shapes_grounding(predictions, objects)
    assert report.scores["shapes_relation_accuracy"] == 1.0
    assert report.totals["relations"] >= 10 and report.totals["relations_unscored"] == 0

    swapped = {}  # each stated relation replaced by its opposite: none holds
    for k, image in report.per_image.items():
        for r in image.relations:
            words = list(image.tokens)
            words[r.start : r.end] = OPPOSITE[r.relation].split()
            swapped[k] = " ".join(words)
    report = shapes_grounding(swapped, objects)
    assert report.scores["shapes_relation_accuracy"] == 0.0
    assert report.totals["relations"] == len(swapped)
