"""Scoring a set of captions as ``tools/evaluate.py`` does: the official metrics, the grounded
metrics where the data set has ground truth (:mod:`captioning.grounding`), the notes that go with
them (tokenizer, anything skipped), the scores file and the HTML report.

    scored = score_captions(references, predictions, out="scores.json", html="report.html")
    print(scored.notes, scored.scores)

The captions come from a results file (:func:`captioning.metrics.load_results`) or from a
checkpoint (:func:`captioning.evaluation.decode_checkpoint`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captioning.errors import CaptioningError
from captioning.grounding import GroundingReport, GroundingTruth, grounding_scores
from captioning.metrics import ScoreReport, evaluate_captions

__all__ = ["TOKENIZERS", "ScoredCaptions", "image_files", "json_scores", "score_captions"]

TOKENIZERS = {
    "ptb": "PTB tokenizer (Stanford CoreNLP, as the official toolkit)",
    "project": "project tokenizer (java not found: scores differ slightly from the official)",
}


@dataclass
class ScoredCaptions:
    """What :func:`score_captions` computed and wrote.

    Attributes:
        scores: the corpus scores under the official names, the grounded scores (when there
            is ground truth), and ``num_images``.
        report: the full :class:`~captioning.metrics.ScoreReport` (per-image scores with HTML).
        grounding: the :class:`~captioning.grounding.GroundingReport`, or None.
        notes: one line each: the tokenizer used, anything skipped, missing thumbnails.
        out: the scores JSON file written.
        html: the HTML report written, or None.
    """

    scores: dict[str, float]
    report: ScoreReport
    grounding: GroundingReport | None = None
    notes: list[str] = field(default_factory=list)
    out: Path | None = None
    html: Path | None = None


def json_scores(scores: Mapping[str, Any]) -> str:
    """Scores as strict JSON: a ratio with nothing to count (``nan``) is written as ``null``."""
    plain = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in scores.items()}
    return json.dumps(plain, indent=2, allow_nan=False) + "\n"


def image_files(
    annotation_file: str | os.PathLike, image_dir: str | os.PathLike
) -> dict[int, Path]:
    """Image id -> file under `image_dir`, from a COCO annotation file's ``images``."""
    try:
        images = json.loads(Path(annotation_file).read_text(encoding="utf-8")).get("images", [])
    except (OSError, ValueError, AttributeError) as exc:
        raise CaptioningError(
            f"cannot read image file names from {annotation_file}: {exc}"
        ) from exc
    return {
        im["id"]: Path(image_dir) / im["file_name"]
        for im in images
        if isinstance(im, dict) and "id" in im and "file_name" in im
    }


def score_captions(
    references: Mapping[int, Sequence[str]],
    predictions: Mapping[int, str],
    *,
    out: str | os.PathLike | None = None,
    spice: bool = False,
    html: str | os.PathLike | None = None,
    images: Mapping[int, Path] | None = None,
    title: str = "",
    grounding: GroundingTruth | None = None,
) -> ScoredCaptions:
    """Score every predicted image against all its references; write the scores (and a page).

    Args:
        references: image id -> reference captions (at least the predicted images).
        predictions: image id -> caption.
        out: the scores JSON to write (None: not written).
        spice: also compute SPICE (needs Java and the Stanford CoreNLP jars).
        html: write a sortable HTML report of every image here (None: not written).
        images: image id -> file, for thumbnails in the report.
        title: the report's title.
        grounding: what the images hold (shapes objects, COCO instances), for the grounded
            metrics (:func:`captioning.grounding.grounding_scores`); None: none.

    Returns:
        The scores, the notes and the files written.
    """
    references = {i: references[i] for i in predictions}
    report = evaluate_captions(references, predictions, spice=spice, per_image=bool(html))
    grounded = grounding_scores(predictions, grounding) if grounding is not None else None
    scores = {**report.scores, **(grounded.scores if grounded else {})}
    scores["num_images"] = report.num_images
    notes = [f"tokenizer: {TOKENIZERS[report.tokenizer]}", *report.notices]
    scored = ScoredCaptions(scores, report, grounded, notes)
    if out is not None:
        scored.out = Path(out)
        scored.out.parent.mkdir(parents=True, exist_ok=True)
        scored.out.write_text(json_scores(scores))
    if html is not None:
        scored.html = _write_report(Path(html), scored, references, predictions, images, title)
    return scored


def _write_report(
    path: Path,
    scored: ScoredCaptions,
    references: Mapping[int, Sequence[str]],
    predictions: Mapping[int, str],
    images: Mapping[int, Path] | None,
    title: str,
) -> Path:
    """The HTML page; a note says how many images have no thumbnail."""
    from captioning.visualize import report_items, write_html_report

    images = images or {}
    missing = [i for i in predictions if i in images and not images[i].is_file()]
    if missing:
        scored.notes.append(
            f"{len(missing)} of {len(predictions)} image files not found "
            f"(e.g. {images[missing[0]]}): no thumbnails for them"
        )
    found = {i: p for i, p in images.items() if p.is_file()}
    items = report_items(
        references, predictions, scored.report.per_image, found or None, scored.grounding
    )
    return write_html_report(
        path, items, title=f"Captions: {title}", scores=scored.scores, notes=scored.notes
    )
