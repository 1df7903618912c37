"""MS-COCO caption files (``captions_train2014.json``, ``captions_val2017.json``, the shapes
data's files, ...): read through pycocotools into image records, checked first; and written
from any records (:func:`write_coco_captions`), for scoring a results file against them.

The readers of the other formats live beside this one (:mod:`captioning.data.karpathy`,
:mod:`captioning.data.folder`), the record types in :mod:`captioning.data.records` and the
datasets in :mod:`captioning.data.datasets`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from captioning.data.records import (
    ImageRecord,
    check_images,
    few,
    is_int,
    read_json,
    report_problems,
)
from captioning.errors import CaptioningError
from captioning.text import has_words

__all__ = ["load_coco_captions", "write_coco_captions"]

log = logging.getLogger(__name__)


def _check_coco_structure(data: Any, path: Path) -> None:
    """Every key pycocotools and :func:`load_coco_captions` rely on is there, with the right type."""
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), list) for key in ("images", "annotations")
    ):
        kind = (
            type(data).__name__ if not isinstance(data, dict) else f"object with {sorted(data)[:6]}"
        )
        raise CaptioningError(
            f"{path} is not a COCO caption annotation file: expected an object with 'images' "
            f"and 'annotations' lists, found a JSON {kind}"
        )
    images, anns = data["images"], data["annotations"]
    no_id = [
        k for k, im in enumerate(images) if not isinstance(im, dict) or not is_int(im.get("id"))
    ]
    named = [im for im in images if isinstance(im, dict) and is_int(im.get("id"))]
    no_name = [
        im["id"]
        for im in named
        if not isinstance(im.get("file_name"), str) or not im["file_name"].strip()
    ]
    twice = sorted(i for i, n in Counter(im["id"] for im in named).items() if n > 1)
    not_dict = [k for k, a in enumerate(anns) if not isinstance(a, dict) or "id" not in a]
    entries = [a for a in anns if isinstance(a, dict) and "id" in a]
    no_image = [a["id"] for a in entries if not is_int(a.get("image_id"))]
    no_caption = [a["id"] for a in entries if not isinstance(a.get("caption"), str)]
    problems = [
        f"{text} {few(found)}"
        for text, found in (
            ("'images' entries without an integer 'id' at positions", no_id),
            ("images without a 'file_name', ids", no_name),
            ("image ids listed twice:", twice),
            ("'annotations' entries without an 'id' at positions", not_dict),
            ("annotations without an integer 'image_id', annotation ids", no_image),
            ("annotations without a 'caption' string, annotation ids", no_caption),
        )
        if found
    ]
    if problems:
        raise CaptioningError(f"{path}: {'; '.join(problems)}; fix or remove these entries")


def _read_coco(annotation_file: Path) -> COCO:
    """Read, check and index a COCO caption file (pycocotools only ever sees a checked file)."""
    data = read_json(
        annotation_file, "COCO caption annotation file", "check data.root and the split's file name"
    )
    _check_coco_structure(data, annotation_file)
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CaptioningError(
            f"{annotation_file} is not a COCO caption annotation file ({type(exc).__name__}: {exc})"
        ) from None
    return coco


def load_coco_captions(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    check_files: bool = True,
    strict: bool = True,
) -> list[ImageRecord]:
    """Read a COCO caption annotation file into image records.

    The file is checked before pycocotools indexes it: it must be a JSON object with ``images``
    (each with an integer ``id`` and a ``file_name``) and ``annotations`` (each with an ``id``, an
    integer ``image_id`` and a ``caption`` string); anything else is an error naming the first
    offending entries. Content problems are errors too when `strict`, and are otherwise skipped
    and counted in the log (the first few named): captions that are empty or only punctuation,
    images without a caption, captions of image ids not in ``images``, and (with `check_files`)
    image files missing on disk.

    Args:
        annotation_file: `captions_*.json` with `images` and `annotations`.
        image_dir: folder that the images' `file_name` entries are relative to.
        check_files: check that every image file exists.
        strict: content problems are errors (False: skip and count them).

    Returns:
        Records sorted by image id.

    Raises:
        CaptioningError: the file is missing, not JSON, malformed, or (`strict`) has problems.
    """
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    coco = _read_coco(annotation_file)
    candidates, empty, uncaptioned = [], [], []
    for image_id in sorted(coco.imgs):
        captions = []
        for ann in coco.imgToAnns.get(image_id, []):
            if has_words(ann["caption"]):
                captions.append(ann["caption"])
            else:
                empty.append(ann["id"])
        if captions:
            path = image_dir / coco.imgs[image_id]["file_name"]
            candidates.append(ImageRecord(int(image_id), path, tuple(captions)))
        else:
            uncaptioned.append(image_id)
    orphans = sorted(set(coco.imgToAnns) - set(coco.imgs))
    report_problems(
        annotation_file,
        strict,
        [
            ("empty or punctuation-only captions, annotation ids", empty),
            ("images without a caption, ids", uncaptioned),
            ("captions of image ids not in 'images':", orphans),
        ],
        "fix the annotation file",
    )
    records = check_images(candidates, annotation_file, strict) if check_files else candidates
    if not records:
        raise CaptioningError(f"{annotation_file} gives no usable image with a caption")
    return records


def write_coco_captions(
    records: Sequence[ImageRecord],
    path: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
) -> Path:
    """Write records as a COCO caption annotation file (the references of a results file).

    Any data set's split becomes a file that ``tools/evaluate.py --references`` scores against,
    with the records' image ids (Flickr's ``imgid``, a folder data set's ids).

    Args:
        records: the images and their reference captions.
        path: the JSON file to write.
        image_dir: ``file_name`` entries are relative to this folder (``--images`` of the
            HTML report); None: each image's file name only.

    Returns:
        The path written.
    """
    path = Path(path)
    images, annotations = [], []
    for record in records:
        name = record.path.name
        if image_dir is not None:
            name = os.path.relpath(record.path, image_dir)
        images.append({"id": record.image_id, "file_name": name})
        for caption in record.captions:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": record.image_id, "caption": caption}
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations}) + "\n")
    return path
