"""Grounding on the shapes data (captioning.evaluation.grounding.shapes)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import write_coco, write_json

from captioning.data import shapes as shapes_data
from captioning.data.shapes import ShapeObject, describe_scene, generate_shapes, sample_scene
from captioning.errors import CaptioningError
from captioning.evaluation.grounding import (
    coco_chair,
    grounding_scores,
    load_shapes_objects,
    load_shapes_truth,
    parse_shapes_caption,
    shapes_grounding,
)

SIZE_WORD = {w: size for size, words in shapes_data.SIZE_WORDS.items() for w in words}


def obj(colour: str, shape: str, size: str = "small") -> ShapeObject:
    return ShapeObject(shape, colour, size, 0, 0, 20)


def labels(objects: list[ShapeObject]) -> Counter:
    return Counter(f"{o.colour} {o.shape}" for o in objects)


def assert_parsed_exactly(caption: str, objects: list[ShapeObject]) -> None:
    """The caption names exactly `objects` (with right sizes) and claims only their number."""
    parsed = parse_shapes_caption(caption)
    assert Counter(m.object for m in parsed.mentions) == labels(objects), caption
    true_size = {f"{o.colour} {o.shape}": o.size for o in objects}
    for m in parsed.mentions:
        words = parsed.tokens[m.start : m.end]
        assert words[-2:] == tuple(m.object.split()), caption
        assert m.size == (SIZE_WORD[words[0]] if len(words) == 3 else None), caption
        assert m.size in (None, true_size[m.object]), caption
    said = sum(w in SIZE_WORD for w in parsed.tokens)
    assert said == sum(m.size is not None for m in parsed.mentions), caption
    numbers = sum(w in ("one", "single", "two", "three") for w in parsed.tokens)
    assert [n for _, n in parsed.claims] == [len(objects)] * numbers, caption


# --------------------------------------------------------------------------- shapes


def test_every_generated_caption_parses_back_to_its_objects_and_scores_perfectly() -> None:
    rng = np.random.default_rng(7)
    predictions, objects = {}, {}
    for scene_id in range(300):
        scene = sample_scene(rng)
        for k, caption in enumerate(describe_scene(scene, rng, n=5)):
            assert_parsed_exactly(caption, scene)
            predictions[scene_id * 10 + k] = caption
            objects[scene_id * 10 + k] = scene
    report = shapes_grounding(predictions, objects)
    assert report.scores == {
        "shapes_precision": 1.0,
        "shapes_recall": 1.0,
        "shapes_exact_match": 1.0,
        "shapes_count_accuracy": 1.0,
        "shapes_size_accuracy": 1.0,
        "shapes_relation_accuracy": 1.0,
        "CHAIR_i": 0.0,
        "CHAIR_s": 0.0,
    }
    assert report.totals["sized_matches"] > 0  # half the captions carry size words
    assert report.totals["relations"] > 100 and report.totals["relations_unscored"] == 0
    stated = {r.relation for im in report.per_image.values() for r in im.relations}
    assert stated == {"left", "right", "above", "below"}
    assert all(not im.missed and not im.extra for im in report.per_image.values())


def test_every_template_with_every_object_count_parses_back_to_its_objects() -> None:
    rng = np.random.default_rng(11)
    scenes: dict[int, list[list[ShapeObject]]] = {1: [], 2: [], 3: []}
    while min(len(s) for s in scenes.values()) < 40:
        scene = sample_scene(rng)
        scenes[len(scene)].append(scene)
    checked = 0  # private names on purpose: a template added to the generator is tested here
    for count, templates in shapes_data._TEMPLATES.items():
        for template in templates:
            for scene in scenes[count][:40]:
                assert_parsed_exactly(shapes_data._caption(template, scene, rng), scene)
                checked += 1
    assert checked == 40 * sum(map(len, shapes_data._TEMPLATES.values()))


def test_mentions_cover_size_colour_and_shape_tokens_and_claims_number_words() -> None:
    parsed = parse_shapes_caption("two shapes : a small red circle and a blue square")
    assert " ".join(parsed.tokens) == "two shapes a small red circle and a blue square"
    assert [(m.start, m.end, m.object, m.size) for m in parsed.mentions] == [
        (3, 6, "red circle", "small"),
        (8, 10, "blue square", None),
    ]
    assert parsed.claims == ((0, 2),)
    assert parse_shapes_caption("a single big green triangle").claims == ((1, 1),)


def test_wrong_captions_give_hand_computed_scores_and_details() -> None:
    objects = {
        1: [obj("red", "circle", "small"), obj("blue", "square", "large")],
        2: [obj("green", "triangle", "small")],
        3: [obj("yellow", "circle"), obj("purple", "square"), obj("orange", "triangle")],
        4: [obj("red", "square")],
    }
    predictions = {
        1: "two shapes : a small red circle and a green square",  # 1 match, 1 hallucinated
        2: "three objects : a big green triangle and a green triangle",  # 1 match, 1 extra
        3: "a yellow circle , a purple square and a circle",  # 2 matches, colourless circle
        4: "a single red square",  # right
    }
    report = shapes_grounding(predictions, objects)
    # objects 7, mentions 8, matched 1+1+2+1 = 5, hallucinated 2 (images 1 and 3),
    # exact: image 4; counts right: 1, 3, 4; sizes said on matches: small (right), big (wrong)
    assert report.scores == pytest.approx(
        {
            "shapes_precision": 5 / 8,
            "shapes_recall": 5 / 7,
            "shapes_exact_match": 1 / 4,
            "shapes_count_accuracy": 3 / 4,
            "shapes_size_accuracy": 1 / 2,
            "shapes_relation_accuracy": math.nan,  # no caption states a relation
            "CHAIR_i": 2 / 8,
            "CHAIR_s": 2 / 4,
        },
        nan_ok=True,
    )
    first, second, third, fourth = (report.per_image[i] for i in (1, 2, 3, 4))
    assert [m.object for m in first.hallucinated] == ["green square"]
    assert first.hallucinated_positions == (8, 9)
    assert first.missed == ("blue square",)
    assert (first.count_correct, first.exact_match) == (True, False)
    assert second.hallucinated == () and [(m.start, m.end) for m in second.extra] == [(8, 10)]
    assert second.claims == ((0, 3),) and second.count_correct is False
    assert third.hallucinated_positions == (8,) and third.missed == ("orange triangle",)
    assert third.count_correct is True and third.exact_match is False
    assert fourth.exact_match is True and fourth.hallucinated_positions == ()


@pytest.mark.parametrize(
    ("caption", "right"),
    [
        ("a red circle and a blue square", True),  # two named, no number word
        ("two shapes : a red circle and a green triangle", True),  # wrong objects, right count
        ("three shapes : a red circle and a blue square", False),  # claims 3
        ("one red circle and a blue square", False),  # claims 1
        ("a red circle", False),  # names 1
        ("two objects : a red circle , a blue square and a red square", False),  # names 3
    ],
)
def test_count_is_right_only_when_named_and_claimed_numbers_equal_the_objects(
    caption: str, right: bool
) -> None:
    report = shapes_grounding({1: caption}, {1: [obj("red", "circle"), obj("blue", "square")]})
    assert report.scores["shapes_count_accuracy"] == float(right)


def test_ratios_without_a_denominator_are_nan() -> None:
    report = shapes_grounding({1: "a gray background"}, {1: [obj("red", "circle")]})
    assert math.isnan(report.scores["shapes_precision"]) and math.isnan(report.scores["CHAIR_i"])
    assert report.scores["shapes_recall"] == 0.0 and report.scores["CHAIR_s"] == 0.0


def test_shapes_loader_reads_the_generators_objects_and_its_captions_score_perfectly(
    tmp_path: Path,
) -> None:
    root = generate_shapes(tmp_path, train=0, val=0, test=12, seed=5)
    path = root / "annotations" / "captions_test.json"
    data = json.loads(path.read_text())
    truth = load_shapes_truth(path)
    assert truth.kind == "shapes"
    assert {i: [o.to_json() for o in objs] for i, objs in truth.objects.items()} == {
        im["id"]: im["objects"] for im in data["images"]
    }
    predictions = {}
    for ann in data["annotations"]:
        predictions.setdefault(ann["image_id"], ann["caption"])
    report = grounding_scores(predictions, truth)
    assert report.kind == "shapes" and len(report.per_image) == 12
    assert report.scores["shapes_exact_match"] == 1.0 and report.scores["CHAIR_i"] == 0.0


def shapes_file_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = {"shape": "circle", "colour": "red", "size": "small", "bbox": [1, 2, 20, 20]}
    image = {"id": 1, "file_name": "a.png"}

    def file(name: str, data: object) -> Path:
        return write_json(tmp_path / name, data)

    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    return {
        "missing": (tmp_path / "nope.json", "not found"),
        "not json": (bad_json, "not valid JSON"),
        "a list": (file("list.json", []), "no 'images' list"),
        "coco captions": (write_coco(tmp_path, "val", {"a.jpg": ["a cat"]}), "no ground-truth"),
        "some without": (
            file("some.json", {"images": [{**image, "objects": [good]}, {"id": 2}]}),
            "without an 'objects' list, ids [2]",
        ),
        "unknown colour": (
            file("pink.json", {"images": [{**image, "objects": [{**good, "colour": "pink"}]}]}),
            "known shape, colour",
        ),
        "no bbox": (
            file("bbox.json", {"images": [{**image, "objects": [{**good, "bbox": None}]}]}),
            "bbox",
        ),
        "twice": (
            file("twice.json", {"images": [{**image, "objects": []}] * 2}),
            "listed twice: [1]",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["missing", "not json", "a list", "coco captions", "some without", "unknown colour",
     "no bbox", "twice"],
)  # fmt: skip
def test_malformed_shapes_files_give_one_line_errors_naming_the_file(
    tmp_path: Path, case: str
) -> None:
    path, expected = shapes_file_cases(tmp_path)[case]
    with pytest.raises(CaptioningError) as info:
        load_shapes_objects(path)
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_predictions_without_ground_truth_are_an_error_naming_them() -> None:
    with pytest.raises(CaptioningError, match=r"no ground-truth objects: \[7\]"):
        shapes_grounding({7: "a red circle"}, {1: [obj("red", "circle")]})
    with pytest.raises(CaptioningError, match="no predictions"):
        coco_chair({}, {1: set()})
