"""Spatial relations on the shapes data: does "a red circle is above a blue square" hold?

The generator (:mod:`captioning.data.shapes`) states one relation in some of its captions
(``{0} {rel} {1}``, ``{0} is {rel} {1}``, ``there is {0} {rel} {1}``, ``three objects : {2} and
{0} {rel} {1}``), with a phrase of :data:`~captioning.data.shapes.RELATIONS` ("to the left of",
"left of", "to the right of", "right of", "above", "below") chosen by
:func:`~captioning.data.shapes.relation`: along the axis where the two bounding-box centres
differ most (left/right on a tie), y growing downwards. This module reads captions the same way
and decides with that same function, so every caption the generator writes states only
relations that hold.

- A caption *states* a relation when a relation phrase stands between two mentions (see
  :func:`~captioning.evaluation.grounding.shapes.parse_shapes_caption`), with nothing between
  the first mention and the phrase but "is", and nothing between the phrase and the second
  mention but an article: "a big red circle is to the left of a blue square" states
  ``red circle`` *left* of ``blue square``. Other words between them ("a red circle and a
  blue square above ...") break the statement: the generator never writes them.
- A stated relation is *scored* when both mentions name objects of the image (colour and shape;
  a scene never holds two objects with the same label); it *holds* when
  :func:`~captioning.data.shapes.relation` of the two objects gives the stated value. A
  relation naming an object that is not in the image is not scored: CHAIR already counts the
  hallucinated object, and no position can be checked for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from captioning.data.shapes import RELATIONS, ShapeObject, relation
from captioning.evaluation.grounding.mentions import Mention, Relation

__all__ = ["find_relations"]

#: (phrase tokens, relation), longest phrases first so that "to the left of" wins over "left of"
_PHRASES = sorted(
    ((tuple(phrase.split()), rel) for rel, phrases in RELATIONS.items() for phrase in phrases),
    key=lambda item: -len(item[0]),
)
_BEFORE = frozenset({"is"})  # may stand between the located mention and the phrase
_AFTER = frozenset({"a", "an", "the"})  # may stand between the phrase and the reference mention


def _holds(subject: str, rel: str, reference: str, objects: Sequence[ShapeObject]) -> bool | None:
    """Whether `subject` is `rel` of `reference` in the scene (None: one of them is not there)."""
    located = [o for o in objects if f"{o.colour} {o.shape}" == subject]
    references = [o for o in objects if f"{o.colour} {o.shape}" == reference]
    if not located or not references:
        return None
    return any(relation(a, b) == rel for a in located for b in references if a is not b)


def find_relations(
    tokens: Sequence[str], mentions: Sequence[Mention], objects: Sequence[ShapeObject]
) -> tuple[Relation, ...]:
    """The relations a caption states, each checked against the image's objects.

    Args:
        tokens: the caption's tokens (:func:`captioning.text.tokenize`).
        mentions: its mentions, in caption order
            (:func:`~captioning.evaluation.grounding.shapes.parse_shapes_caption`).
        objects: the image's ground-truth objects.

    Returns:
        One :class:`~captioning.evaluation.grounding.mentions.Relation` per statement, in
        caption order, with ``holds`` decided (None: not scored).
    """
    found: list[Relation] = []
    i = 0
    while i < len(tokens):
        match = next(
            ((words, rel) for words, rel in _PHRASES if tuple(tokens[i : i + len(words)]) == words),
            None,
        )
        if match is None:
            i += 1
            continue
        words, rel = match
        start, end = i, i + len(words)
        i = end
        before = [m for m in mentions if m.end <= start]
        after = [m for m in mentions if m.start >= end]
        if not before or not after:
            continue
        subject, reference = before[-1], after[0]
        if not set(tokens[subject.end : start]) <= _BEFORE:
            continue
        if not set(tokens[end : reference.start]) <= _AFTER:
            continue
        holds = _holds(subject.object, rel, reference.object, objects)
        found.append(Relation(subject.object, rel, reference.object, start, end, holds))
    return tuple(found)
