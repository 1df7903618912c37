"""COCO synonyms and plurals (captioning.evaluation.grounding.synonyms)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_instances

from captioning.evaluation.grounding import (
    COCO_CATEGORIES,
    find_mentions,
    grounding_scores,
    load_coco_truth,
    phrase_table,
)
from captioning.evaluation.grounding.synonyms import NON_OBJECTS, plural
from captioning.text import tokenize

# --------------------------------------------------------------------------- COCO CHAIR


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
