"""Grounded caption metrics: are the objects a caption names in the image?

BLEU and CIDEr reward the easy words; these scores check the objects. One entry point::

    truth = load_shapes_truth("shapes/annotations/captions_test.json")     # shapes data
    truth = load_coco_truth("coco/annotations/instances_val2014.json")     # COCO-style data
    truth = with_references(truth, references)       # + objects the references name (the paper)
    report = grounding_scores(predictions, truth)    # predictions: {image_id: caption}
    report.scores                      # {"CHAIR_i": 0.12, ...}: plain floats
    report.per_image[42].hallucinated_positions      # token positions to mark in HTML

Score names (stable; ratios pooled over all scored images, ``nan`` when a denominator is 0):

============================ ====== ==================================================
``shapes_precision``         shapes matched mentions / mentions (colour + shape)
``shapes_recall``            shapes matched mentions / objects in the images
``shapes_exact_match``       shapes images named exactly right (multiset of colour + shape)
``shapes_count_accuracy``    shapes images whose named and claimed numbers are right
``shapes_size_accuracy``     shapes matched mentions with a right size word / with one
``shapes_relation_accuracy`` shapes stated relations that hold / stated between objects present
``CHAIR_i``                  both   hallucinated mentions / mentions
``CHAIR_s``                  both   captions with a hallucinated mention / captions
``object_recall``            coco   present categories named / present categories
============================ ====== ==================================================

Exact definitions: :func:`~captioning.evaluation.grounding.shapes.shapes_grounding` (shapes) and
:func:`~captioning.evaluation.grounding.chair.coco_chair` (CHAIR, Rohrbach et al., EMNLP 2018, with the
synonyms and rules of :mod:`captioning.evaluation.grounding.synonyms`; scoring joins the
references' objects, :func:`captioning.evaluation.scoring.score_captions`). Token positions index
:func:`captioning.text.tokenize` of the caption, also given as ``per_image[i].tokens``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from captioning.errors import CaptioningError
from captioning.evaluation.grounding.chair import (
    CocoObjects,
    add_reference_objects,
    coco_chair,
    find_mentions,
    load_coco_objects,
)
from captioning.evaluation.grounding.mentions import (
    GroundingReport,
    ImageGrounding,
    Mention,
    Relation,
)
from captioning.evaluation.grounding.shapes import (
    load_shapes_objects,
    parse_shapes_caption,
    shapes_grounding,
)
from captioning.evaluation.grounding.synonyms import COCO_CATEGORIES, COCO_SYNONYMS, phrase_table

__all__ = [
    "COCO_CATEGORIES",
    "COCO_SYNONYMS",
    "CocoObjects",
    "GroundingReport",
    "GroundingTruth",
    "ImageGrounding",
    "Mention",
    "Relation",
    "coco_chair",
    "find_mentions",
    "grounding_scores",
    "load_coco_objects",
    "load_coco_truth",
    "load_shapes_objects",
    "load_shapes_truth",
    "parse_shapes_caption",
    "phrase_table",
    "shapes_grounding",
    "truth_for_split",
    "with_references",
]


@dataclass(frozen=True)
class GroundingTruth:
    """What the images hold, for :func:`grounding_scores`.

    Attributes:
        kind: ``"shapes"`` (objects: ``{image_id: [ShapeObject]}``) or ``"coco"`` (objects:
            ``{image_id: frozenset of category names}``).
        objects: Per image, as said for ``kind``.
        categories: ``"coco"`` only: the category names whose synonyms are looked for.
    """

    kind: Literal["shapes", "coco"]
    objects: Mapping[int, Any]
    categories: tuple[str, ...] = field(default=COCO_CATEGORIES)


def load_shapes_truth(annotation_file: str | os.PathLike) -> GroundingTruth:
    """The ground truth of a shapes caption file (see :func:`load_shapes_objects`)."""
    return GroundingTruth("shapes", load_shapes_objects(annotation_file))


def load_coco_truth(
    instances_file: str | os.PathLike, *, references: Mapping[int, Sequence[str]] | None = None
) -> GroundingTruth:
    """The ground truth of a COCO instances file (see :func:`load_coco_objects`)."""
    present, categories = load_coco_objects(instances_file, references=references)
    return GroundingTruth("coco", present, categories)


def with_references(
    truth: GroundingTruth, references: Mapping[int, Sequence[str]]
) -> GroundingTruth:
    """COCO truth joined with the objects each image's references name, as the CHAIR paper does.

    Args:
        truth: From :func:`load_coco_truth` (shapes truth is returned as it is: its objects are
            complete).
        references: ``{image_id: [reference captions]}``.

    Returns:
        The truth whose images also hold the categories their references name.
    """
    if truth.kind != "coco":
        return truth
    joined = add_reference_objects(truth.objects, references, truth.categories)
    return GroundingTruth("coco", joined, truth.categories)


def grounding_scores(predictions: Mapping[int, str], truth: GroundingTruth) -> GroundingReport:
    """Grounded scores of captions: shapes scores and CHAIR, or CHAIR and object recall.

    Args:
        predictions: ``{image_id: caption}``; every id needs ground truth in ``truth``.
        truth: From :func:`load_shapes_truth` or :func:`load_coco_truth`.

    Returns:
        A :class:`GroundingReport`: ``scores`` (names in the module docstring), ``per_image``
        (mentions, hallucinated words and their positions, missed objects) and ``totals``.

    Raises:
        CaptioningError: no predictions, ids without ground truth, or an unknown kind.
    """
    if truth.kind == "shapes":
        return shapes_grounding(predictions, truth.objects)
    if truth.kind == "coco":
        return coco_chair(predictions, truth.objects, categories=truth.categories)
    raise CaptioningError(f"unknown grounding truth kind {truth.kind!r}; use 'shapes' or 'coco'")


def truth_for_split(data: Any, split: str) -> GroundingTruth | None:
    """The ground truth a data set offers for one split, if any.

    The shapes data (``data.generate: shapes``) carries its objects in the split's caption file;
    COCO-style data sets give an instances file with ``data.instances`` (relative to the root).

    Args:
        data: the ``data`` settings (:class:`~captioning.data.config.DataConfig` or a mapping,
            e.g. a checkpoint's).
        split: the split scored.

    Returns:
        The truth, or None when the data set has none.
    """
    from captioning.data.config import data_config

    data = data_config(data, legacy=True)
    root = Path(data.root)
    if data.generate == "shapes":
        spec = data.splits.get(split)
        if isinstance(spec, Mapping) and "annotations" in spec:
            return load_shapes_truth(root / str(spec["annotations"]))
    if data.instances:
        return load_coco_truth(root / data.instances)
    return None
