"""Scoring captions: the official metrics, NLTK's BLEU and the grounded metrics, with notes.

    scored = score_captions(references, predictions, grounding=truth)
    scored.scores     # {"Bleu_1": ..., "CIDEr": ..., "nltk_Bleu_4": ..., "CHAIR_i": ..., "num_images": N}
    scored.notes      # the tokenizer used, anything skipped

The one place where the official scores (:mod:`captioning.evaluation.metrics`) and the grounded
ones (:mod:`captioning.evaluation.grounding`) are merged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from captioning.evaluation.grounding import (
    GroundingReport,
    GroundingTruth,
    grounding_scores,
    with_references,
)
from captioning.evaluation.metrics import TEST_METRICS, ScoreReport, evaluate_captions

__all__ = ["TOKENIZERS", "ScoredCaptions", "score_captions"]

TOKENIZERS = {
    "ptb": "PTB tokenizer (Stanford CoreNLP, as the official toolkit)",
    "project": "project tokenizer (java not found: scores differ slightly from the official)",
}


@dataclass
class ScoredCaptions:
    """What :func:`score_captions` computed.

    Attributes:
        scores: the corpus scores under the official names, NLTK's BLEU, the grounded scores
            (when there is ground truth), and ``num_images`` (last).
        report: the full :class:`~captioning.evaluation.metrics.ScoreReport` (per-image scores
            when asked for).
        grounding: the :class:`~captioning.evaluation.grounding.GroundingReport`, or None.
        notes: one line each: the tokenizer used, anything skipped.
    """

    scores: dict[str, float]
    report: ScoreReport
    grounding: GroundingReport | None = None
    notes: list[str] = field(default_factory=list)


def score_captions(
    references: Mapping[int, Sequence[str]],
    predictions: Mapping[int, str],
    *,
    metrics: Sequence[str] = TEST_METRICS,
    spice: bool = False,
    per_image: bool = False,
    grounding: GroundingTruth | None = None,
) -> ScoredCaptions:
    """Score every predicted image against all its references (and its ground truth).

    Args:
        references: image id -> reference captions (at least the predicted images).
        predictions: image id -> caption.
        metrics: official scorers to run (:func:`captioning.evaluation.metrics.coco_scores`).
        spice: also compute SPICE (needs Java and the Stanford CoreNLP jars).
        per_image: also keep per-image scores (for the HTML report).
        grounding: what the images hold (shapes objects, COCO instances), for the grounded
            metrics (:func:`captioning.evaluation.grounding.grounding_scores`); None: none.
            COCO instances are joined with the objects the references name, as the CHAIR
            paper does (:func:`captioning.evaluation.grounding.with_references`).

    Returns:
        The scores and the notes.
    """
    references = {i: references[i] for i in predictions}
    report = evaluate_captions(
        references, predictions, metrics=metrics, spice=spice, per_image=per_image
    )
    grounded = None
    if grounding is not None:
        grounded = grounding_scores(predictions, with_references(grounding, references))
    scores = {**report.scores, **(grounded.scores if grounded else {})}
    scores["num_images"] = report.num_images
    notes = [f"tokenizer: {TOKENIZERS[report.tokenizer]}", *report.notices]
    return ScoredCaptions(scores, report, grounded, notes)
