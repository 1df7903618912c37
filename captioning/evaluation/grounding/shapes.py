"""Grounded scores on the shapes data: which of the named objects are in the image.

A caption is read with the generator's own vocabulary (:mod:`captioning.data.shapes`):

- a *mention* is a shape word ("circle", "square", "triangle"), with the colour word directly
  before it, if any, and the size word ("small", "little", "tiny", "large", "big") directly
  before that, if any: "a big red circle" names ``red circle`` (size ``large``) with
  ``tokens[1:4]``; a shape word with no colour before it names just ``circle``, which is no
  object's label, so it counts as hallucinated;
- a *claim* is a number word: "one", "single" (as in "a single"), "two" ... "ten";
- a *relation* is a phrase such as "to the left of" or "above" between two mentions
  (:mod:`captioning.evaluation.grounding.relations`), checked against the objects' positions as
  the generator decides them;
- nothing else counts (articles, "shapes", "objects", "gray background"), so every caption the
  generator writes names exactly its objects, claims exactly their number and states only
  relations that hold.

Plural shape words ("two circles") are no mention: the generator never writes them, so a
model trained on its captions cannot either.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import NamedTuple

from captioning.data.records import few, is_int, read_json
from captioning.data.shapes import COLOURS, SHAPES, SIZE_WORDS, SIZES, ShapeObject
from captioning.errors import CaptioningError
from captioning.evaluation.grounding.mentions import (
    GroundingReport,
    ImageGrounding,
    Mention,
    checked_ids,
    ratio,
)
from captioning.evaluation.grounding.relations import find_relations
from captioning.text import tokenize

__all__ = ["NUMBER_WORDS", "ParsedCaption", "load_shapes_objects", "parse_shapes_caption"]
__all__ += ["shapes_grounding"]

NUMBER_WORDS = {"one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
NUMBER_WORDS |= {"seven": 7, "eight": 8, "nine": 9, "ten": 10}
_SIZE_OF = {word: size for size, words in SIZE_WORDS.items() for word in words}


class ParsedCaption(NamedTuple):
    """A caption read by :func:`parse_shapes_caption`."""

    tokens: tuple[str, ...]
    mentions: tuple[Mention, ...]
    claims: tuple[tuple[int, int], ...]  # (token position, number)


def parse_shapes_caption(caption: str) -> ParsedCaption:
    """The objects a caption names and the numbers it claims (rules in the module docstring).

    Args:
        caption: e.g. ``"two shapes : a small red circle and a blue square"``.

    Returns:
        Its tokens (:func:`captioning.text.tokenize`), the mentions in order and the claims;
        for the example ``Mention(3, 6, "red circle", size="small")`` and
        ``Mention(8, 10, "blue square")`` (none marked hallucinated yet), and ``((0, 2),)``.
    """
    tokens = tuple(tokenize(caption))
    mentions = []
    for end, word in enumerate(tokens, start=1):
        if word not in SHAPES:
            continue
        start, name, size = end - 1, word, None
        if start > 0 and tokens[start - 1] in COLOURS:
            start -= 1
            name = f"{tokens[start]} {word}"
        if start > 0 and tokens[start - 1] in _SIZE_OF:
            start -= 1
            size = _SIZE_OF[tokens[start]]
        mentions.append(Mention(start, end, name, size=size))
    claims = tuple((i, NUMBER_WORDS[w]) for i, w in enumerate(tokens) if w in NUMBER_WORDS)
    return ParsedCaption(tokens, tuple(mentions), claims)


def _ground(caption: str, objects: Sequence[ShapeObject]) -> tuple[ImageGrounding, int, int]:
    """One image: its :class:`ImageGrounding`, sized matched mentions, correct sizes among them."""
    tokens, mentions, claims = parse_shapes_caption(caption)
    present = [f"{o.colour} {o.shape}" for o in objects]
    available = Counter(present)
    marked, matched, extra = [], [], []
    for m in mentions:
        if m.object not in available:
            m = replace(m, hallucinated=True)
        elif available[m.object] > 0:
            available[m.object] -= 1
            matched.append(m)
        else:
            extra.append(m)
        marked.append(m)
    missed = []
    for label in present:  # what is left of each label, in the objects' order
        if available[label] > 0:
            available[label] -= 1
            missed.append(label)
    sized = Counter((m.object, m.size) for m in matched if m.size is not None)
    true_sizes = Counter((f"{o.colour} {o.shape}", o.size) for o in objects)
    correct_sizes = sum(min(n, true_sizes[key]) for key, n in sized.items())
    image = ImageGrounding(
        tokens=tokens,
        mentions=tuple(marked),
        present=tuple(present),
        missed=tuple(missed),
        extra=tuple(extra),
        claims=claims,
        count_correct=len(mentions) == len(objects) and all(n == len(objects) for _, n in claims),
        exact_match=Counter(m.object for m in mentions) == Counter(present),
        relations=find_relations(tokens, mentions, objects),
    )
    return image, sum(sized.values()), correct_sizes


def shapes_grounding(
    predictions: Mapping[int, str], objects: Mapping[int, Sequence[ShapeObject]]
) -> GroundingReport:
    """Scores captions of shapes images against the generator's ground-truth objects.

    Mentions are matched to objects as multisets of ``"colour shape"`` labels (size is not
    part of the match). Per image, a mention is *matched* while objects with its label are
    left, *hallucinated* when the image has no object with its label (a wrong colour, a wrong
    shape, no colour at all), and *extra* otherwise (a label named more often than present).
    Sums run over all images (micro averages):

    - ``shapes_precision``: matched mentions / mentions;
    - ``shapes_recall``: matched mentions / objects;
    - ``shapes_exact_match``: images whose mentioned labels equal their objects' labels as
      multisets (every object named with the right colour and shape, nothing else) / images;
    - ``shapes_count_accuracy``: images whose count is right / images. The count is right when
      the caption names as many objects as the image holds *and* every number word it holds
      ("a single", "one", "two shapes", "three objects") equals that number, so "two shapes :
      a red circle and a blue square" is right for any two objects, and "three objects : a red
      circle and a blue square" is wrong for two or three;
    - ``shapes_size_accuracy``: matched mentions with a size word whose size is right /
      matched mentions with a size word (``nan`` if none has one);
    - ``shapes_relation_accuracy``: stated relations that hold / stated relations between two
      objects of the image (``nan`` if none); a caption that states no relation, or one naming
      an object the image lacks, is not counted
      (:mod:`~captioning.evaluation.grounding.relations`);
    - ``CHAIR_i``: hallucinated mentions / mentions;
    - ``CHAIR_s``: images with at least one hallucinated mention / images.

    Args:
        predictions: ``{image_id: caption}``.
        objects: ``{image_id: [ShapeObject, ...]}``, e.g. from :func:`load_shapes_objects`;
            may hold more images than ``predictions``.

    Returns:
        A :class:`GroundingReport` (``kind="shapes"``) with per-image details.

    Raises:
        CaptioningError: no predictions, or predicted ids without objects.
    """
    per_image: dict[int, ImageGrounding] = {}
    sized = correct_sizes = 0
    for image_id in checked_ids(predictions, objects, "ground-truth objects"):
        image, n_sized, n_correct = _ground(predictions[image_id], objects[image_id])
        per_image[image_id] = image
        sized, correct_sizes = sized + n_sized, correct_sizes + n_correct
    images = list(per_image.values())
    totals = {
        "images": len(images),
        "objects": sum(len(im.present) for im in images),
        "mentions": sum(len(im.mentions) for im in images),
        "matched": sum(len(im.mentions) - len(im.hallucinated) - len(im.extra) for im in images),
        "hallucinated": sum(len(im.hallucinated) for im in images),
        "hallucinated_captions": sum(bool(im.hallucinated) for im in images),
        "exact_matches": sum(bool(im.exact_match) for im in images),
        "correct_counts": sum(bool(im.count_correct) for im in images),
        "sized_matches": sized,
        "correct_sizes": correct_sizes,
        "relations": sum(r.holds is not None for im in images for r in im.relations),
        "relations_held": sum(bool(r.holds) for im in images for r in im.relations),
        "relations_unscored": sum(r.holds is None for im in images for r in im.relations),
    }
    scores = {
        "shapes_precision": ratio(totals["matched"], totals["mentions"]),
        "shapes_recall": ratio(totals["matched"], totals["objects"]),
        "shapes_exact_match": ratio(totals["exact_matches"], totals["images"]),
        "shapes_count_accuracy": ratio(totals["correct_counts"], totals["images"]),
        "shapes_size_accuracy": ratio(correct_sizes, sized),
        "shapes_relation_accuracy": ratio(totals["relations_held"], totals["relations"]),
        "CHAIR_i": ratio(totals["hallucinated"], totals["mentions"]),
        "CHAIR_s": ratio(totals["hallucinated_captions"], totals["images"]),
    }
    return GroundingReport(scores, per_image, totals, kind="shapes")


def _shape_object(obj: object) -> ShapeObject | None:
    """The object of one ``"objects"`` entry, or None if it is malformed."""
    if not isinstance(obj, dict):
        return None
    bbox = obj.get("bbox")
    if (
        obj.get("shape") not in SHAPES
        or obj.get("colour") not in COLOURS
        or obj.get("size") not in SIZES
        or not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(is_int(v) for v in bbox)
    ):
        return None
    return ShapeObject(obj["shape"], obj["colour"], obj["size"], bbox[0], bbox[1], bbox[2])


def load_shapes_objects(annotation_file: str | os.PathLike) -> dict[int, list[ShapeObject]]:
    """Reads the ground-truth objects from a shapes caption file (``images[*].objects``).

    Args:
        annotation_file: e.g. ``<shapes root>/annotations/captions_test.json``.

    Returns:
        ``{image_id: [ShapeObject, ...]}`` in file order.

    Raises:
        CaptioningError: a missing or non-JSON file, no ``images`` list, images without an
            integer ``id``, listed twice or without an ``objects`` list, or objects without a
            known ``shape``, ``colour``, ``size`` and an integer ``bbox`` [x, y, w, h]; one
            line naming the file.
    """
    hint = "pass a caption file written by the shapes generator"
    data = read_json(annotation_file, "shapes caption file", hint)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not all(isinstance(im, dict) for im in images):
        raise CaptioningError(f"{annotation_file} has no 'images' list of objects; {hint}")
    no_id = [k for k, im in enumerate(images) if not is_int(im.get("id"))]
    if no_id:
        raise CaptioningError(
            f"{annotation_file}: 'images' entries without an integer 'id' at positions {few(no_id)}"
        )
    twice = sorted(i for i, n in Counter(im["id"] for im in images).items() if n > 1)
    if twice:
        raise CaptioningError(f"{annotation_file}: image ids listed twice: {few(twice)}")
    no_objects = [im["id"] for im in images if not isinstance(im.get("objects"), list)]
    if no_objects and len(no_objects) == len(images):
        raise CaptioningError(
            f"{annotation_file} has no ground-truth 'objects' in its images; {hint} "
            "(annotations/captions_*.json under the shapes root)"
        )
    if no_objects:
        raise CaptioningError(
            f"{annotation_file}: images without an 'objects' list, ids {few(no_objects)}"
        )
    objects = {im["id"]: [_shape_object(o) for o in im["objects"]] for im in images}
    broken = [i for i, objs in objects.items() if None in objs]
    if broken:
        raise CaptioningError(
            f"{annotation_file}: objects without a known shape, colour, size and an integer "
            f"bbox [x, y, w, h] in images {few(broken)}"
        )
    return objects  # type: ignore[return-value]  # no None left
