"""CHAIR (Rohrbach et al., EMNLP 2018): objects a caption names that the image does not hold.

An image's objects are the categories of its COCO instance annotations (crowd regions
included) joined with the categories its reference captions name, as in the paper (every
caller that has the references passes them). A caption's object words are found with
:func:`find_mentions` and the synonym table of
:mod:`captioning.evaluation.grounding.synonyms`, which gives the mentions of the paper's
released code (``tests/fixtures/chair`` holds captions scored by that code; a test checks
that the scores here equal them); the deliberate differences are listed in that module.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import NamedTuple

from captioning.data.records import few, is_int, read_json
from captioning.errors import CaptioningError
from captioning.evaluation.grounding.mentions import (
    GroundingReport,
    ImageGrounding,
    Mention,
    checked_ids,
    ratio,
)
from captioning.evaluation.grounding.synonyms import (
    COCO_CATEGORIES,
    Phrase,
    phrase_table,
    singular,
)
from captioning.text import tokenize

__all__ = [
    "CocoObjects",
    "add_reference_objects",
    "coco_chair",
    "find_mentions",
    "load_coco_objects",
]


class CocoObjects(NamedTuple):
    """The ground truth read by :func:`load_coco_objects`."""

    present: dict[int, frozenset[str]]  # image id -> names of the categories it holds
    categories: tuple[str, ...]  # every category name of the file, in id order


def find_mentions(tokens: Sequence[str], table: Mapping[Phrase, str | None]) -> list[Mention]:
    """The object names in a token list, two-word phrases first, left to right.

    Each token is brought to its singular (:func:`~captioning.evaluation.grounding.synonyms.singular`
    over the table's words); at each position the longest phrase of ``table`` wins and its
    tokens are consumed ("hot dogs" is one ``hot dog`` mention, not a dog; "baby elephants" an
    elephant); a phrase mapped to ``None`` ("home plate") is consumed without a mention. When a
    toilet is named, "seat" is no chair. Repeated names give repeated mentions.

    Args:
        tokens: e.g. ``tokenize("Two hot dogs and a dog")``.
        table: From :func:`captioning.evaluation.grounding.synonyms.phrase_table`.

    Returns:
        ``[Mention(1, 3, "hot dog"), Mention(5, 6, "dog")]`` for the example.
    """
    known = {word for phrase in table for word in phrase}
    words = [singular(t, known) for t in tokens]
    longest = max(map(len, table), default=0)
    found: list[tuple[Mention, Phrase]] = []
    i = 0
    while i < len(words):
        longer = range(min(longest, len(words) - i), 0, -1)
        n = next((n for n in longer if tuple(words[i : i + n]) in table), 0)
        if n == 0:
            i += 1
            continue
        phrase = tuple(words[i : i + n])
        category = table[phrase]
        if category is not None:
            found.append((Mention(i, i + n, category), phrase))
        i += n
    toilet = any(phrase in (("toilet",), ("toilet", "seat")) for _, phrase in found)
    return [m for m, phrase in found if not (toilet and phrase == ("seat",))]


def coco_chair(
    predictions: Mapping[int, str],
    present: Mapping[int, Iterable[str]],
    *,
    categories: Iterable[str] = COCO_CATEGORIES,
) -> GroundingReport:
    """CHAIR and object recall of captions against each image's object categories.

    Every occurrence of an object name counts (as in the paper's code): "a dog chasing a dog"
    in an image without dogs is two hallucinated mentions. Sums run over all images:

    - ``CHAIR_i``: hallucinated mentions / mentions (``nan`` when nothing is named);
    - ``CHAIR_s``: captions with at least one hallucinated mention / captions;
    - ``object_recall``: present categories the caption names / present categories.

    Args:
        predictions: ``{image_id: caption}``.
        present: ``{image_id: category names}``, e.g. ``load_coco_objects(...).present``; may
            hold more images than ``predictions``; an image may hold none.
        categories: The category names whose synonyms are looked for (the 80 COCO ones by
            default; pass ``load_coco_objects(...).categories`` for other instance files).

    Returns:
        A :class:`GroundingReport` (``kind="coco"``) with per-image details.

    Raises:
        CaptioningError: no predictions, or predicted ids missing from ``present``.
    """
    table = phrase_table(categories)
    per_image: dict[int, ImageGrounding] = {}
    for image_id in checked_ids(predictions, present, "instance annotations"):
        truth = frozenset(present[image_id])
        tokens = tuple(tokenize(predictions[image_id]))
        mentions = [
            replace(m, hallucinated=m.object not in truth) for m in find_mentions(tokens, table)
        ]
        named = {m.object for m in mentions}
        per_image[image_id] = ImageGrounding(
            tokens=tokens,
            mentions=tuple(mentions),
            present=tuple(sorted(truth)),
            missed=tuple(sorted(truth - named)),
        )
    images = list(per_image.values())
    totals = {
        "images": len(images),
        "mentions": sum(len(im.mentions) for im in images),
        "hallucinated": sum(len(im.hallucinated) for im in images),
        "hallucinated_captions": sum(bool(im.hallucinated) for im in images),
        "objects": sum(len(im.present) for im in images),
        "recalled": sum(len(im.present) - len(im.missed) for im in images),
    }
    scores = {
        "CHAIR_i": ratio(totals["hallucinated"], totals["mentions"]),
        "CHAIR_s": ratio(totals["hallucinated_captions"], totals["images"]),
        "object_recall": ratio(totals["recalled"], totals["objects"]),
    }
    return GroundingReport(scores, per_image, totals, kind="coco")


def _bad(entries: list, *fields: tuple[str, type]) -> list[int]:
    """Positions of entries that are not objects with each field of its type (int: no bool)."""
    return [
        k
        for k, e in enumerate(entries)
        if not isinstance(e, dict)
        or not all(is_int(e.get(f)) if t is int else isinstance(e.get(f), t) for f, t in fields)
    ]


def _check_instances(data: object, path: str | os.PathLike) -> None:
    """Every key the reader relies on is there with the right type; one error line if not."""
    keys = ("images", "annotations", "categories")
    missing = [k for k in keys if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise CaptioningError(
            f"{path} is not a COCO instances file: no {' / '.join(map(repr, missing))} list; "
            "pass e.g. annotations/instances_val2014.json (captions_*.json files have no objects)"
        )
    assert isinstance(data, dict)
    images, anns, cats = data["images"], data["annotations"], data["categories"]
    bad_images = _bad(images, ("id", int))
    bad_cats = _bad(cats, ("id", int), ("name", str))
    bad_anns = _bad(anns, ("image_id", int), ("category_id", int))
    problems = [
        ("'images' entries without an integer 'id' at positions", bad_images),
        ("'categories' entries without an integer 'id' and a 'name' string at positions", bad_cats),
        (
            "'annotations' entries without an integer 'image_id' and 'category_id' at positions",
            bad_anns,
        ),
    ]
    if not any(found for _, found in problems):
        cat_ids = Counter(c["id"] for c in cats)
        image_ids = {im["id"] for im in images}
        problems += [
            ("category ids listed twice:", sorted(i for i, n in cat_ids.items() if n > 1)),
            (
                "annotations of image ids not in 'images':",
                sorted({a["image_id"] for a in anns} - image_ids),
            ),
            (
                "annotations of category ids not in 'categories':",
                sorted({a["category_id"] for a in anns} - set(cat_ids)),
            ),
        ]
    listed = [f"{text} {few(found)}" for text, found in problems if found]
    if listed:
        raise CaptioningError(f"{path}: {'; '.join(listed)}; fix or remove these entries")


def load_coco_objects(
    instances_file: str | os.PathLike,
    *,
    references: Mapping[int, Sequence[str]] | None = None,
) -> CocoObjects:
    """Reads which object categories each image holds from a COCO instances file.

    Args:
        instances_file: e.g. ``annotations/instances_val2014.json``: ``images`` (``id``),
            ``annotations`` (``image_id``, ``category_id``) and ``categories`` (``id``,
            ``name``).
        references: ``{image_id: [reference captions]}``; when given, the categories that the
            references name are added to each image's objects, as the CHAIR paper does
            (:func:`add_reference_objects`).

    Returns:
        A :class:`CocoObjects`: every image of the file (those without annotations hold
        nothing) and the category names.

    Raises:
        CaptioningError: a missing or non-JSON file, missing keys, malformed entries, or
            annotations of unknown images or categories; one line naming the file.
    """
    hint = "set data.instances to a COCO instances_*.json file"
    data = read_json(instances_file, "COCO instances file", hint)
    _check_instances(data, instances_file)
    names = {c["id"]: c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])}
    objects: dict[int, set[str]] = {im["id"]: set() for im in data["images"]}
    for ann in data["annotations"]:
        objects[ann["image_id"]].add(names[ann["category_id"]])
    present = {i: frozenset(found) for i, found in objects.items()}
    if references is not None:
        present = add_reference_objects(present, references, names.values())
    return CocoObjects(present, tuple(names.values()))


def add_reference_objects(
    present: Mapping[int, Iterable[str]],
    references: Mapping[int, Sequence[str]],
    categories: Iterable[str] = COCO_CATEGORIES,
) -> dict[int, frozenset[str]]:
    """Each image's objects joined with those its reference captions name (the paper's truth).

    Args:
        present: ``{image_id: category names}`` from the instance annotations.
        references: ``{image_id: [reference captions]}``; images not in ``present`` are
            ignored.
        categories: The category names looked for (see :func:`coco_chair`).

    Returns:
        ``{image_id: frozenset of category names}`` for every image of ``present``.
    """
    table = phrase_table(categories)
    joined = {i: set(found) for i, found in present.items()}
    for image_id, captions in references.items():
        for caption in captions if image_id in joined else ():
            joined[image_id].update(m.object for m in find_mentions(tokenize(caption), table))
    return {i: frozenset(found) for i, found in joined.items()}
