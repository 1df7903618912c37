"""CHAIR on COCO instances (captioning.evaluation.grounding.chair)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import CATEGORIES, OBJECTS, write_coco, write_json

from captioning.errors import CaptioningError
from captioning.evaluation.grounding import (
    GroundingTruth,
    coco_chair,
    grounding_scores,
    load_coco_objects,
    load_coco_truth,
)

# --------------------------------------------------------------------------- COCO CHAIR

# image 1: person x2, dog; 2: teddy bear, hot dog, dining table; 3: bear, person, bus; 4: none
CAPTIONS = {
    1: "Two men walking their dogs.",
    2: "A teddy bear and a hot dog on a table next to a dog",
    3: "A woman at the bus stop watching a bear and a cat",
    4: "an orange cat on an empty street",
}


def write_instances(path: Path, objects: dict[int, list[int]] = OBJECTS, **changes) -> Path:
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 9, "height": 9} for i in objects]
    anns = [
        {"id": 100 * i + k, "image_id": i, "category_id": c, "bbox": [0, 0, 1, 1], "iscrowd": 0}
        for i, cats in objects.items()
        for k, c in enumerate(cats)
    ]
    data = {"images": images, "annotations": anns, "categories": CATEGORIES, **changes}
    return write_json(path, data)


def test_coco_instances_give_each_images_categories(tmp_path: Path) -> None:
    present, categories = load_coco_objects(write_instances(tmp_path / "instances.json"))
    assert categories == tuple(c["name"] for c in CATEGORIES)
    assert present == {
        1: {"person", "dog"},
        2: {"teddy bear", "hot dog", "dining table"},
        3: {"bear", "person", "bus"},
        4: set(),
    }


def test_chair_on_hand_made_instances_gives_hand_computed_scores(tmp_path: Path) -> None:
    truth = load_coco_truth(write_instances(tmp_path / "instances.json"))
    report = grounding_scores(CAPTIONS, truth)
    # mentions: men, dogs | teddy bear, hot dog, table, dog* | woman, bear, cat* | cat*
    # ("bus stop" names no object, "orange cat" is a cat): 10 mentions, 3 hallucinated (*),
    # in 3 of 4 captions; present 2 + 3 + 3 + 0 = 8, named 2 + 3 + 2 (bus missed) = 7
    assert report.kind == "coco"
    assert report.scores == pytest.approx(
        {"CHAIR_i": 3 / 10, "CHAIR_s": 3 / 4, "object_recall": 7 / 8}
    )
    assert report.totals == {
        "images": 4,
        "mentions": 10,
        "hallucinated": 3,
        "hallucinated_captions": 3,
        "objects": 8,
        "recalled": 7,
    }
    one, two, three, four = (report.per_image[i] for i in (1, 2, 3, 4))
    assert [(m.start, m.end, m.object) for m in one.mentions] == [(1, 2, "person"), (4, 5, "dog")]
    assert [(m.start, m.end, m.object, m.hallucinated) for m in two.mentions] == [
        (1, 3, "teddy bear", False),
        (5, 7, "hot dog", False),
        (9, 10, "dining table", False),
        (13, 14, "dog", True),
    ]
    assert two.hallucinated_positions == (13,) and two.missed == ()
    assert three.hallucinated_positions == (11,) and three.missed == ("bus",)
    assert [m.object for m in three.mentions] == ["person", "bear", "cat"]
    assert four.hallucinated_positions == (2,) and four.tokens[2] == "cat"


def test_hot_dog_and_teddy_bear_are_not_dogs_or_bears(tmp_path: Path) -> None:
    present = {1: {"hot dog", "teddy bear"}}
    report = coco_chair({1: "two hot dogs beside a teddy bear"}, present)
    assert [m.object for m in report.per_image[1].mentions] == ["hot dog", "teddy bear"]
    assert report.scores["CHAIR_i"] == 0.0 and report.scores["object_recall"] == 1.0
    report = coco_chair({1: "a dog next to a bear"}, present)
    assert report.scores["CHAIR_i"] == 1.0 and report.scores["object_recall"] == 0.0


def test_every_occurrence_of_a_hallucinated_name_counts() -> None:
    report = coco_chair({1: "a dog chasing a dog and a cat"}, {1: {"cat"}})
    assert report.scores["CHAIR_i"] == pytest.approx(2 / 3)
    assert report.per_image[1].hallucinated_positions == (1, 4)


def test_reference_captions_add_the_objects_they_name(tmp_path: Path) -> None:
    path = write_instances(tmp_path / "instances.json")
    present, _ = load_coco_objects(path, references={4: ["a cat on a street", "a hot dog"]})
    assert present[4] == {"cat", "hot dog"} and present[1] == {"person", "dog"}


def instance_file_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"images": [')
    return {
        "missing": (tmp_path / "nope.json", "not found"),
        "not json": (bad_json, "not valid JSON"),
        "captions file": (
            write_coco(tmp_path, "val", {"a.jpg": ["a cat"]}),
            "not a COCO instances file: no 'categories' list",
        ),
        "no category id": (
            write_instances(tmp_path / "a.json", annotations=[{"id": 1, "image_id": 1}]),
            "without an integer 'image_id' and 'category_id' at positions [0]",
        ),
        "unknown image": (
            write_instances(tmp_path / "b.json", annotations=[{"image_id": 9, "category_id": 1}]),
            "image ids not in 'images': [9]",
        ),
        "unknown category": (
            write_instances(tmp_path / "c.json", annotations=[{"image_id": 1, "category_id": 99}]),
            "category ids not in 'categories': [99]",
        ),
        "nameless category": (
            write_instances(tmp_path / "d.json", categories=[{"id": 1}]),
            "'name' string",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["missing", "not json", "captions file", "no category id", "unknown image",
     "unknown category", "nameless category"],
)  # fmt: skip
def test_malformed_instance_files_give_one_line_errors_naming_the_file(
    tmp_path: Path, case: str
) -> None:
    path, expected = instance_file_cases(tmp_path)[case]
    with pytest.raises(CaptioningError) as info:
        load_coco_objects(path)
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_unknown_truth_kind_is_an_error() -> None:
    with pytest.raises(CaptioningError, match="unknown grounding truth kind"):
        truth = GroundingTruth("flickr", {1: set()})  # type: ignore[arg-type]
        grounding_scores({1: "a cat"}, truth)


# ------------------------------------------------------- the paper's released code, on a fixture
RELEASED = Path(__file__).parents[2] / "fixtures" / "chair"


def test_chair_equals_the_released_code_of_rohrbach_et_al() -> None:
    """CHAIR_i, CHAIR_s and each caption's objects as the paper's code computed them.

    The fixture covers plurals (wives, persons, mice, puppies), two-word objects (laptop
    computer, hot dog, teddy bear, bow tie, wine glass), the animal modifiers (adult / baby /
    young giraffe, baby elephant, baby cat), objects only the references name (desk, bison,
    sheep), synonyms (goat, panda, bagel, passenger, traveler) and non-object uses of object
    words (toilet seat, home plate, train tracks, plants, glass of wine, passenger jet).
    """
    expected = json.loads((RELEASED / "expected.json").read_text())
    references: dict[int, list[str]] = {}
    for ann in json.loads((RELEASED / "references.json").read_text())["annotations"]:
        references.setdefault(ann["image_id"], []).append(ann["caption"])
    truth = load_coco_truth(RELEASED / "instances.json", references=references)
    captions = json.loads((RELEASED / "captions.json").read_text())
    report = grounding_scores({c["image_id"]: c["caption"] for c in captions}, truth)
    assert report.scores["CHAIR_i"] == pytest.approx(expected["CHAIR_i"], abs=1e-12)
    assert report.scores["CHAIR_s"] == pytest.approx(expected["CHAIR_s"], abs=1e-12)
    for image_id, grounding in report.per_image.items():
        want = expected["images"][str(image_id)]
        assert [m.object for m in grounding.mentions] == want["mentioned"], want["caption"]
        assert [m.object for m in grounding.hallucinated] == want["hallucinated"], want["caption"]
        assert sorted(grounding.present) == want["truth"], want["caption"]
