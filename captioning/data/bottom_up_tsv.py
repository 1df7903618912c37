"""The original bottom-up attention release (TSV) -> the per-image layout of :mod:`.regions`.

peteanderson80/bottom-up-attention released its Faster R-CNN features for COCO as TSV files
(``trainval/karpathy_*_resnet101_faster_rcnn_genome.tsv*``; its ``tools/read_tsv.py``), one
image per row, tab-separated, no header::

    image_id  image_w  image_h  num_boxes  boxes  features

``boxes`` is base64 of float32 (num_boxes, 4) x1, y1, x2, y2; ``features`` base64 of float32
(num_boxes, 2048). :func:`convert_bottom_up_tsv` does what self-critical.pytorch's
``scripts/make_bu_data.py`` does: ``<att_dir>/<id>.npz`` (``np.savez_compressed``, key
``feat``), ``<fc_dir>/<id>.npy`` the mean of the regions, ``<box_dir>/<id>.npy`` the boxes.
Differences: rows are streamed one at a time (``csv.field_size_limit`` raised, as there), each
file is written atomically (a temporary file renamed into place), a row that does not decode
to the shapes it declares is one error naming the file and line, and ``dtype=float16`` halves
the output (the reference keeps float32, the default here too).
"""

from __future__ import annotations

import base64
import binascii
import csv
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from captioning.errors import CaptioningError
from captioning.io import atomic_write

__all__ = ["FIELDNAMES", "BottomUpRow", "convert_bottom_up_tsv", "read_bottom_up_tsv"]

log = logging.getLogger(__name__)

#: the release's columns (its tools/read_tsv.py, and make_bu_data.py)
FIELDNAMES = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")


@dataclass(frozen=True)
class BottomUpRow:
    """One image of the release: its size, boxes (K, 4) and region features (K, D), float32."""

    image_id: int
    width: int
    height: int
    boxes: np.ndarray
    features: np.ndarray


def _decode(text: str, rows: int, where: str, what: str) -> np.ndarray:
    try:
        array = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.float32)
    except (binascii.Error, ValueError) as exc:
        raise CaptioningError(f"{where}: {what} is not base64 float32 ({exc})") from None
    if rows < 1 or array.size == 0 or array.size % rows:
        raise CaptioningError(
            f"{where}: {what} holds {array.size} floats, not a multiple of num_boxes={rows}; "
            "the file is truncated or not a bottom-up TSV"
        )
    return array.reshape(rows, -1)


def read_bottom_up_tsv(path: str | os.PathLike) -> Iterator[BottomUpRow]:
    """Stream a release TSV file row by row (memory: one row).

    Raises:
        CaptioningError: a row that is not in the release's format (names the file and line).
    """
    path = Path(path)
    csv.field_size_limit(sys.maxsize)  # a row holds ~100 KB of base64 (as make_bu_data.py)
    with open(path, newline="", encoding="ascii") as f:
        reader = csv.reader(f, delimiter="\t")
        dim = None  # every row's regions have the first row's size
        for line, row in enumerate(reader, 1):
            where = f"{path}, line {line}"
            if len(row) != len(FIELDNAMES):
                raise CaptioningError(
                    f"{where}: {len(row)} columns, expected {len(FIELDNAMES)} "
                    f"({', '.join(FIELDNAMES)}); the file is truncated or not a bottom-up TSV"
                )
            try:
                image_id, width, height, num_boxes = (int(v) for v in row[:4])
            except ValueError:
                raise CaptioningError(
                    f"{where}: image_id, image_w, image_h, num_boxes must be integers, got "
                    f"{row[:4]}"
                ) from None
            boxes = _decode(row[4], num_boxes, where, "boxes")
            if boxes.shape[1] != 4:
                raise CaptioningError(f"{where}: boxes of {boxes.shape[1]} numbers, expected 4")
            features = _decode(row[5], num_boxes, where, "features")
            if dim is not None and features.shape[1] != dim:
                raise CaptioningError(
                    f"{where}: features of {features.shape[1]} numbers per region, the rows "
                    f"before had {dim}; the file is truncated or mixes two releases"
                )
            dim = features.shape[1]
            yield BottomUpRow(image_id, width, height, boxes, features)


def convert_bottom_up_tsv(
    paths: Sequence[str | os.PathLike],
    att_dir: str | os.PathLike,
    fc_dir: str | os.PathLike | None = None,
    box_dir: str | os.PathLike | None = None,
    *,
    dtype: str = "float32",
    progress: bool = True,
) -> int:
    """Convert release TSV files into per-image files (see the module docstring).

    Args:
        paths: the TSV files.
        att_dir: where ``<image_id>.npz`` (key ``feat``: (K, D)) go.
        fc_dir: where ``<image_id>.npy`` (D,) = mean of the regions go (None: not written).
        box_dir: where ``<image_id>.npy`` (K, 4) boxes go (None: not written).
        dtype: ``float32`` (as the release) or ``float16`` for the written features.
        progress: show a tqdm bar.

    Returns:
        The number of images written.
    """
    if dtype not in ("float32", "float16"):
        raise CaptioningError(f"dtype={dtype!r}: use float32 or float16")
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise CaptioningError(f"no such TSV file: {missing[0]}")
    folders = [Path(d) for d in (att_dir, fc_dir, box_dir) if d is not None]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    count = 0
    bar = tqdm(desc="bottom-up TSV", unit="img", disable=not progress, dynamic_ncols=True)
    with bar:
        for path in paths:
            for row in read_bottom_up_tsv(path):
                feat = row.features.astype(dtype)  # (K, D)
                name = str(row.image_id)
                atomic_write(  # compressed, as make_bu_data.py
                    Path(att_dir) / f"{name}.npz",
                    lambda f, feat=feat: np.savez_compressed(f, feat=feat),
                    durable=False,
                )
                if fc_dir is not None:
                    fc = row.features.mean(0).astype(dtype)  # (D,)
                    atomic_write(
                        Path(fc_dir) / f"{name}.npy", lambda f, a=fc: np.save(f, a), durable=False
                    )
                if box_dir is not None:
                    atomic_write(
                        Path(box_dir) / f"{name}.npy",
                        lambda f, a=row.boxes: np.save(f, a),
                        durable=False,
                    )
                count += 1
                bar.update()
    log.info("converted %d images from %d TSV file(s) into %s", count, len(paths), att_dir)
    return count
