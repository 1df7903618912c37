"""Captions that stop on a word that cannot end a caption: "a man riding a horse on a".

Self-critical training without the end token in its reward learns to stop on such fragments
(Rennie et al. 2017, appendix: about a third of their COCO captions did). :func:`ending_report`
counts them in a results file (``test_results.json``): the captions whose last word is an
article, a conjunction or a preposition (:data:`DANGLING_WORDS`, lower case, after
:func:`captioning.text.tokenize`). The list leaves out words that end captions as adverbs or
particles ("looking up", "parked outside", "a dog lying down").
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from captioning.evaluation.results import load_results
from captioning.text import tokenize

__all__ = ["DANGLING_WORDS", "EndingReport", "count_endings", "ending_report", "ends_dangling"]

ARTICLES = ("a", "an", "the")
CONJUNCTIONS = ("and", "or", "but", "nor", "because", "while", "than")
PREPOSITIONS = (
    "across", "against", "along", "among", "at", "beside", "between", "by", "during", "for",
    "from", "in", "into", "near", "next", "of", "on", "onto", "through", "to", "toward",
    "towards", "under", "upon", "with", "within",
)  # fmt: skip
#: the words no caption ends on
DANGLING_WORDS = frozenset(ARTICLES + CONJUNCTIONS + PREPOSITIONS)


def ends_dangling(caption: str) -> bool:
    """Whether `caption`'s last word is one of :data:`DANGLING_WORDS` (an empty one: False)."""
    words = tokenize(caption)
    return bool(words) and words[-1] in DANGLING_WORDS


@dataclass(frozen=True)
class EndingReport:
    """How many captions end on a dangling word, and which words.

    Attributes:
        captions: captions counted.
        dangling: those that end on a word of :data:`DANGLING_WORDS`.
        words: the dangling last words and how often each ends a caption.
    """

    captions: int
    dangling: int
    words: dict[str, int]

    @property
    def share(self) -> float:
        """dangling / captions (NaN without captions)."""
        return self.dangling / self.captions if self.captions else float("nan")


def count_endings(captions: Iterable[str]) -> EndingReport:
    """The :class:`EndingReport` of some captions."""
    captions = list(captions)
    last = Counter(tokenize(c)[-1] for c in captions if ends_dangling(c))
    return EndingReport(len(captions), sum(last.values()), dict(last.most_common()))


def ending_report(results_file: str | os.PathLike) -> EndingReport:
    """The :class:`EndingReport` of a COCO results file (``[{"image_id", "caption"}, ...]``,
    e.g. a run's ``test_results.json``)."""
    return count_endings(load_results(results_file).values())
