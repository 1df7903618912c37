"""Caption files in and out: COCO reference and results files, the scores file, image files.

* :func:`load_references` / :func:`load_results`: read and check a COCO caption annotation file
  and a results file ``[{"image_id": int, "caption": str}, ...]``.
* :func:`write_results` / :func:`write_scores`: write them (atomically; scores as strict JSON).
* :func:`image_files`: image id -> file, from an annotation file's ``images``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from captioning.errors import CaptioningError
from captioning.evaluation.metrics import format_ids
from captioning.io import write_text_atomic

__all__ = [
    "image_files",
    "json_scores",
    "load_references",
    "load_results",
    "write_results",
    "write_scores",
]

References = Mapping[int, Sequence[str]]


def load_references(annotation_file: str | os.PathLike) -> dict[int, list[str]]:
    """Reads a COCO caption annotation file (via pycocotools) into ``{image_id: [captions]}``.

    Args:
        annotation_file: e.g. ``captions_val2014.json``.

    Returns:
        The captions of every image that has any, in the file's image order.

    Raises:
        CaptioningError: an unreadable file, or not a caption annotation file.
    """
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO prints progress
            coco = COCO(os.fspath(annotation_file))
        refs = {i: [a["caption"] for a in anns] for i, anns in coco.imgToAnns.items() if anns}
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
        raise CaptioningError(
            f"cannot read COCO caption annotations from {annotation_file} "
            f"({type(exc).__name__}: {exc}); pass a captions_*.json file"
        ) from exc
    order = [i for i in coco.getImgIds() if i in refs] + [i for i in refs if i not in coco.imgs]
    return {i: refs[i] for i in order}


def _is_result_entry(e: object) -> bool:
    return (
        isinstance(e, dict) and type(e.get("image_id")) is int and isinstance(e.get("caption"), str)
    )


def load_results(
    results_file: str | os.PathLike, references: References | None = None
) -> dict[int, str]:
    """Reads and checks a COCO results file ``[{"image_id": int, "caption": str}, ...]``.

    Args:
        results_file: the JSON file.
        references: when given, every image id must have references here.

    Returns:
        ``{image_id: caption}`` in file order.

    Raises:
        CaptioningError: unreadable JSON, not a list, entries without an integer
            ``image_id`` or a string ``caption``, duplicate ids, empty captions,
            or ids missing from ``references``; the message names the culprits.
    """
    name = os.fspath(results_file)
    try:
        data = json.loads(Path(name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CaptioningError(f"cannot read results file {name}: {exc}") from exc
    fix = 'write a JSON list [{"image_id": int, "caption": str}, ...]'
    if not isinstance(data, list):
        raise CaptioningError(f"{name}: got a JSON {type(data).__name__}; {fix}")
    bad = [n for n, e in enumerate(data) if not _is_result_entry(e)]
    if bad:
        raise CaptioningError(
            f'{name}: no integer "image_id" or string "caption" in entries {format_ids(bad)} '
            f"(0-based); {fix}"
        )
    duplicates = [i for i, n in Counter(e["image_id"] for e in data).items() if n > 1]
    if duplicates:
        raise CaptioningError(
            f"{name}: duplicate image ids {format_ids(duplicates)}; keep one caption per image"
        )
    results = {e["image_id"]: e["caption"] for e in data}
    empty = [i for i, c in results.items() if not c.strip()]
    if empty:
        raise CaptioningError(
            f"{name}: empty captions for image ids {format_ids(empty)}; caption every image"
        )
    missing = [i for i in results if references is not None and i not in references]
    if missing:
        raise CaptioningError(
            f"{name}: {len(missing)} image ids not in the references: {format_ids(missing)}; "
            "use the annotation file of the split these captions were generated for"
        )
    return results


def write_results(path: str | os.PathLike, predictions: Mapping[int, str]) -> Path:
    """Write captions as a COCO results file (sorted by image id); returns the path."""
    path = Path(path)
    entries = [{"image_id": i, "caption": c} for i, c in sorted(predictions.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(entries) + "\n")
    return path


def json_scores(scores: Mapping[str, Any]) -> str:
    """Scores as strict JSON: a ratio with nothing to count (``nan``) is written as ``null``."""
    plain = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in scores.items()}
    return json.dumps(plain, indent=2, allow_nan=False) + "\n"


def write_scores(path: str | os.PathLike, scores: Mapping[str, Any]) -> Path:
    """Write scores as strict JSON (:func:`json_scores`); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json_scores(scores))
    return path


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
