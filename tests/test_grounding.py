"""Tests for captioning.evaluation.grounding: shapes grounding, CHAIR with the project's COCO synonyms."""

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
    COCO_CATEGORIES,
    GroundingTruth,
    coco_chair,
    find_mentions,
    grounding_scores,
    load_coco_objects,
    load_coco_truth,
    load_shapes_objects,
    load_shapes_truth,
    parse_shapes_caption,
    phrase_table,
    shapes_grounding,
)
from captioning.evaluation.grounding.synonyms import NON_OBJECTS, plural
from captioning.text import tokenize

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
        "CHAIR_i": 0.0,
        "CHAIR_s": 0.0,
    }
    assert report.totals["sized_matches"] > 0  # half the captions carry size words
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
            "CHAIR_i": 2 / 8,
            "CHAIR_s": 2 / 4,
        }
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


# --------------------------------------------------------------------------- COCO CHAIR

CATEGORIES = [
    {"id": 1, "name": "person"},
    {"id": 6, "name": "bus"},
    {"id": 17, "name": "cat"},
    {"id": 18, "name": "dog"},
    {"id": 23, "name": "bear"},
    {"id": 58, "name": "hot dog"},
    {"id": 67, "name": "dining table"},
    {"id": 88, "name": "teddy bear"},
]
# image 1: person x2, dog; 2: teddy bear, hot dog, dining table; 3: bear, person, bus; 4: none
OBJECTS = {1: [1, 1, 18], 2: [88, 58, 67], 3: [23, 1, 6], 4: []}
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


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("two hot dogs and a dog", ["hot dogs=hot dog", "dog=dog"]),
        ("a hot-dog", ["hot dog=hot dog"]),
        ("a polar bear and a teddy bear", ["bear=bear", "teddy bear=teddy bear"]),
        ("three giraffes", ["giraffes=giraffe"]),
        ("women and children", ["women=person", "children=person"]),
        ("a baseball player swings a baseball bat", ["player=person", "baseball bat=baseball bat"]),
        ("a microwave oven and an oven", ["microwave oven=microwave", "oven=oven"]),
        ("a cell phone , a cellphone and phones",
         ["cell phone=cell phone", "cellphone=cell phone", "phones=cell phone"]),
        ("a traffic light by a fire hydrant and a stop sign",
         ["traffic light=traffic light", "fire hydrant=fire hydrant", "stop sign=stop sign"]),
        ("knives and mice on the dining table",
         ["knives=knife", "mice=mouse", "dining table=dining table"]),
        ("two buses at the bus stop near the train tracks", ["buses=bus"]),
        ("an orange cat and an orange", ["cat=cat", "orange=orange"]),
        ("a baby elephant and a baby", ["elephant=elephant", "baby=person"]),
        ("a toilet bowl and a bowl", ["toilet bowl=toilet", "bowl=bowl"]),
        ("a glass table with a glass of wine", ["table=dining table", "glass of wine=wine glass"]),
        ("a man's hair dryer and a tennis racket",
         ["man=person", "hair dryer=hair drier", "tennis racket=tennis racket"]),
    ],
)  # fmt: skip
def test_synonyms_plurals_and_longest_phrases_map_words_to_categories(
    caption: str, expected: list[str]
) -> None:
    tokens = tokenize(caption)
    found = find_mentions(tokens, phrase_table())
    assert [f"{' '.join(tokens[m.start : m.end])}={m.object}" for m in found] == expected


def test_every_coco_category_name_and_its_plural_map_to_it() -> None:
    assert [plural(w) for w in ("bench", "man", "puppy", "knife", "sheep", "bus", "toy")] == [
        "benches", "men", "puppies", "knives", "sheep", "buses", "toys"
    ]  # fmt: skip
    table = phrase_table()
    assert len(COCO_CATEGORIES) == len(set(COCO_CATEGORIES)) == 80
    for name in COCO_CATEGORIES:
        words = tuple(tokenize(name))
        assert table[words] == name
        assert table[(*words[:-1], plural(words[-1]))] == name


@pytest.mark.parametrize("phrase", NON_OBJECTS)
def test_place_names_name_no_object_singular_or_plural(phrase: str) -> None:
    table = phrase_table()
    for caption in (f"a {phrase}", f"two {phrase}s"):
        assert find_mentions(tokenize(caption), table) == [], caption


def test_categories_outside_coco_are_named_by_themselves(tmp_path: Path) -> None:
    path = write_instances(
        tmp_path / "unicorns.json", {1: [5]}, categories=[{"id": 5, "name": "unicorn"}]
    )
    report = grounding_scores({1: "two unicorns and a horse"}, load_coco_truth(path))
    assert [m.object for m in report.per_image[1].mentions] == ["unicorn"]  # no "horse" category
    assert report.scores == {"CHAIR_i": 0.0, "CHAIR_s": 0.0, "object_recall": 1.0}


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
