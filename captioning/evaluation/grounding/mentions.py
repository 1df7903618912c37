"""What the grounded metrics return: the mentions found in a caption and the scores.

Shared by :mod:`captioning.evaluation.grounding.shapes` and :mod:`captioning.evaluation.grounding.chair`, together
with the checks on their inputs (predictions, JSON files) that both need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from captioning.data.records import few
from captioning.errors import CaptioningError

__all__ = ["GroundingReport", "ImageGrounding", "Mention", "Relation"]


@dataclass(frozen=True)
class Mention:
    """One object named in a caption.

    Attributes:
        start: Index of its first token in :func:`captioning.text.tokenize` of the caption.
        end: One past its last token (``tokens[start:end]`` are its words).
        object: What it names: ``"red circle"`` (shapes; just ``"circle"`` without a colour)
            or a COCO category name such as ``"hot dog"``.
        hallucinated: The image holds no such object.
        size: The size word's meaning, ``"small"`` / ``"large"`` (shapes; ``None`` if unsaid).
    """

    start: int
    end: int
    object: str
    hallucinated: bool = False
    size: str | None = None


@dataclass(frozen=True)
class Relation:
    """A spatial relation a caption states between two of its mentions (shapes only).

    Attributes:
        subject: The object located (a mention's ``object``, e.g. ``"red circle"``).
        relation: ``"left"``, ``"right"``, ``"above"`` or ``"below"``: where ``subject`` is
            relative to ``object`` (:func:`captioning.data.shapes.relation`'s values).
        object: The reference object (``"blue square"``).
        start: Index of the relation phrase's first token ("to the left of": "to").
        end: One past its last token.
        holds: Whether the image's ground truth agrees; None when ``subject`` or ``object`` is
            not in the image (not scored: CHAIR counts that).
    """

    subject: str
    relation: str
    object: str
    start: int
    end: int
    holds: bool | None = None


@dataclass(frozen=True)
class ImageGrounding:
    """One image's caption, checked against its objects.

    Attributes:
        tokens: The caption's tokens (:func:`captioning.text.tokenize`); positions index them.
        mentions: Every object named, in caption order (a repeated name is repeated here).
        present: The image's objects: ``"red circle"`` labels, one per object (shapes), or
            its category names, once each (COCO).
        missed: Present objects the caption does not name (shapes: a multiset difference).
        extra: Shapes only: mentions of present objects beyond how many there are (the
            second "red circle" when there is one); unmatched, yet not hallucinated.
        claims: Shapes only: ``(position, number)`` for each number word ("two", "single").
        count_correct: Shapes only: see :func:`captioning.evaluation.grounding.shapes.shapes_grounding`.
        exact_match: Shapes only: the named objects equal the present ones as multisets.
        relations: Shapes only: the spatial relations the caption states, in caption order.
    """

    tokens: tuple[str, ...]
    mentions: tuple[Mention, ...]
    present: tuple[str, ...]
    missed: tuple[str, ...]
    extra: tuple[Mention, ...] = ()
    claims: tuple[tuple[int, int], ...] = ()
    count_correct: bool | None = None
    exact_match: bool | None = None
    relations: tuple[Relation, ...] = ()

    @property
    def hallucinated(self) -> tuple[Mention, ...]:
        """The mentions of objects the image does not hold."""
        return tuple(m for m in self.mentions if m.hallucinated)

    @property
    def hallucinated_positions(self) -> tuple[int, ...]:
        """Token positions of the hallucinated mentions' words, ascending (to mark in HTML)."""
        return tuple(i for m in self.hallucinated for i in range(m.start, m.end))


@dataclass
class GroundingReport:
    """The result of :func:`captioning.evaluation.grounding.grounding_scores`.

    Attributes:
        scores: Corpus scores, plain floats, under stable names (see the package docstring);
            ``nan`` where a ratio has nothing to count (e.g. precision with no mention).
        per_image: ``{image_id: ImageGrounding}`` for every scored image.
        totals: The integer counts behind the scores (``images``, ``mentions``, ...), so
            anyone can recompute them.
        kind: ``"shapes"`` or ``"coco"``.
    """

    scores: dict[str, float]
    per_image: dict[int, ImageGrounding] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    kind: str = ""


def ratio(num: int, den: int) -> float:
    """``num / den`` as a float, ``nan`` when ``den`` is 0."""
    return num / den if den else math.nan


def checked_ids(predictions: Mapping[int, str], truth: Mapping[int, object], what: str) -> list:
    """The predicted image ids; an error when there are none or some lack ground truth."""
    if not predictions:
        raise CaptioningError("no predictions to score; generate captions first")
    missing = [i for i in predictions if i not in truth]
    if missing:
        raise CaptioningError(
            f"{len(missing)} predicted image ids have no {what}: {few(missing)}; "
            "use the ground truth of the split the captions were generated for"
        )
    return list(predictions)
