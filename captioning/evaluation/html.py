"""The HTML page of a scored split: every image (by file name) with its caption (hallucinated
words marked), references and per-image scores (:func:`captioning.visualize.write_html_report`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from captioning.evaluation.scoring import ScoredCaptions

__all__ = ["write_scored_page"]


def write_scored_page(
    path: str | os.PathLike,
    scored: ScoredCaptions,
    references: Mapping[int, Sequence[str]],
    predictions: Mapping[int, str],
    *,
    images: Mapping[int, Path] | None = None,
    title: str = "",
    names: Mapping[int, str] | None = None,
) -> Path:
    """Write the page; a note (appended to ``scored.notes``) says how many images have no
    thumbnail.

    Args:
        path: the HTML file.
        scored: from :func:`captioning.evaluation.scoring.score_captions` with ``per_image``.
        references: image id -> reference captions.
        predictions: image id -> caption.
        images: image id -> file, for thumbnails and the file names the rows show (without
            it, rows show ids).
        title: the page's title (after "Captions: ").
        names: image id -> file name for the rows, where `images` has none (e.g. the
            ``file_name`` of a references file scored without its images).

    Returns:
        The file written.
    """
    from captioning.visualize import report_items, write_html_report

    images = images or {}
    missing = [i for i in predictions if i in images and not images[i].is_file()]
    if missing:
        scored.notes.append(
            f"{len(missing)} of {len(predictions)} image files not found "
            f"(e.g. {images[missing[0]]}): no thumbnails for them"
        )
    found = {i: p for i, p in images.items() if p.is_file()}
    references = {i: references[i] for i in predictions}
    items = report_items(
        references,
        predictions,
        scored.report.per_image,
        found or None,
        scored.grounding,
        names={**(names or {}), **{i: p.name for i, p in images.items()}},  # also when missing
    )
    return write_html_report(
        Path(path), items, title=f"Captions: {title}", scores=scored.scores, notes=scored.notes
    )
