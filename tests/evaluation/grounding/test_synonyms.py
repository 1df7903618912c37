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
from captioning.evaluation.grounding.synonyms import NON_OBJECTS, plural, singular
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
        ("a microwave oven and an oven", ["microwave=microwave", "oven=oven", "oven=oven"]),
        ("a cell phone , a cellphone and phones",
         ["cell phone=cell phone", "cellphone=cell phone", "phones=cell phone"]),
        ("a traffic light by a fire hydrant and a stop sign",
         ["traffic light=traffic light", "fire hydrant=fire hydrant", "stop sign=stop sign"]),
        ("knives and mice on the dining table",
         ["knives=knife", "mice=mouse", "dining table=dining table"]),
        ("two buses at the bus stop near the train tracks", ["buses=bus"]),
        ("a bus and two ties", ["bus=bus", "ties=tie"]),
        ("an orange cat and an orange", ["orange=orange", "cat=cat", "orange=orange"]),
        ("a baby elephant and a baby", ["baby elephant=elephant", "baby=person"]),
        ("an adult giraffe , a young giraffe and adults", ["adult giraffe=giraffe",
         "giraffe=giraffe", "adults=person"]),
        ("a passenger jet and a passenger", ["passenger jet=airplane", "passenger=person"]),
        ("a laptop computer", ["laptop computer=laptop"]),
        ("potted plants and a plant", ["potted plants=potted plant"]),
        ("buffalo , bison , goats , pandas , bagels and travelers", ["buffalo=cow",
         "bison=cow", "goats=sheep", "pandas=bear", "bagels=donut", "travelers=person"]),
        ("wives , persons and mice", ["persons=person", "mice=mouse"]),
        ("taxis , zebus , corgis and broccolis",
         ["taxis=car", "zebus=cow", "corgis=dog", "broccolis=broccoli"]),
        ("a fork/knife", ["fork=fork", "knife=knife"]),
        ("a toilet bowl and the seat of a toilet", ["toilet=toilet", "bowl=bowl",
         "toilet=toilet"]),
        ("a glass table with a glass of wine", ["table=dining table"]),
        ("a man's hair dryer and a tennis racket", ["man=person", "tennis racket=tennis racket"]),
        ("a motor bike , a cheesecake and an iphone",
         ["motor bike=motorcycle", "cheesecake=cake", "iphone=cell phone"]),
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
    assert [singular(w) for w in ("wives", "persons", "mice", "buses", "ties", "knives")] == [
        "wife", "person", "mouse", "bus", "tie", "knife"
    ]  # fmt: skip
    table = phrase_table()
    assert len(COCO_CATEGORIES) == len(set(COCO_CATEGORIES)) == 80
    for name in COCO_CATEGORIES:
        words = tuple(tokenize(name))
        assert table[words] == name
        for caption in (name, f"{' '.join(words[:-1])} {plural(words[-1])}"):
            assert [m.object for m in find_mentions(tokenize(caption), table)] == [name], caption


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
