"""An offline stand-in for bottom-up features: one region per object of the shapes data.

Bottom-up attention (Anderson et al. 2018) describes an image by a detector's region features;
the shapes generator knows every object's box, so the "detector" here is exact: each object's
box (``bbox`` ``[x, y, w, h]`` in the caption file's ``objects``, as x1, y1, x2, y2 = x, y,
x + w, y + h) is pooled with :func:`torchvision.ops.roi_align` into a 7x7 map, and the whole
image likewise gives the global (fc) vector. Written in the per-image layout of
:mod:`captioning.data.regions` (``fc/<id>.npy`` float16, ``att/<id>.npz`` key ``feat``
float16, ``box/<id>.npy`` float32), so the same code trains on these and on real bottom-up
features.

The feature map pooled is the image itself (RGB, each channel standardised as
``(p - 0.5) / 0.25``): a training-free choice. A 7x7 RGB pooling of a tight box keeps the
object's colour (its values) and its shape (which of the 49 cells are background: a square
fills them all, a circle leaves the corners, a triangle one side); the box features that
``box_dir`` adds (position and area, :data:`~captioning.data.regions.BOX_FEATURES`) carry its
size and place, which the relations need. A randomly initialised CNN's last map (e.g.
``vgg_tiny``: 16x16 at 128 px) would blur 18-px objects to a cell or two; a trained one would
need a training run first. Each feature is 147-d (3 x 7 x 7); the README reports what Up-Down
learns from them.

The folders are written on first use (``data.features.extract=shapes``) and reused while
``<att_dir>/extracted.json`` matches the data set's manifest and these settings.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image
from torchvision.ops import roi_align
from tqdm.auto import tqdm

from captioning.data.records import read_json
from captioning.data.shapes import LOCK_NAME, MANIFEST_NAME, SPLITS
from captioning.errors import CaptioningError
from captioning.io import atomic_write, exclusive_lock, write_text_atomic

__all__ = ["POOL", "VERSION", "extract_shapes_regions", "object_boxes", "region_features"]

log = logging.getLogger(__name__)

VERSION = 1
POOL = 7  # roi_align output side: 3 x 7 x 7 = 147 features per region
_MARKER = "extracted.json"
_CHUNK = 64  # images per roi_align call


def object_boxes(objects: list[dict]) -> np.ndarray:
    """The objects' boxes (K, 4) as x1, y1, x2, y2 pixels, from their ``bbox`` [x, y, w, h]."""
    boxes = [[x, y, x + w, y + h] for x, y, w, h in (o["bbox"] for o in objects)]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


@torch.no_grad()
def region_features(
    images: list[Image.Image], boxes: list[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each image's whole-image vector and one vector per box: RoIAlign over the standardised
    pixels (one call for the batch).

    Args:
        images: RGB images of one size.
        boxes: per image (K_i, 4) x1, y1, x2, y2 in pixels.

    Returns:
        Per image: fc (3*POOL*POOL,) and att (K_i, 3*POOL*POOL), float32.
    """
    pixels = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images]))
    fmap = ((pixels.float() / 255.0 - 0.5) / 0.25).permute(0, 3, 1, 2)  # (N, 3, H, W)
    h, w = pixels.shape[1:3]
    whole = torch.tensor([[0.0, 0.0, float(w), float(h)]])
    rois = [torch.cat([whole, torch.from_numpy(b)]) for b in boxes]  # each (1 + K_i, 4)
    pooled = roi_align(fmap, rois, output_size=POOL, spatial_scale=1.0, aligned=True)
    flat = pooled.flatten(1).numpy()  # (sum(1 + K_i), 3*POOL*POOL)
    out, start = [], 0
    for b in boxes:
        out.append((flat[start], flat[start + 1 : start + 1 + len(b)]))
        start += 1 + len(b)
    return out


def _save(path: Path, write: Callable[[BinaryIO], object]) -> None:
    atomic_write(path, write, durable=False)  # the marker, written last, is durable


def _write(
    folders: dict[str, Path | None], name: str, fc: np.ndarray, att: np.ndarray, boxes: np.ndarray
) -> None:
    """One image's files: att (K, D) and fc (D,) as float16, boxes (K, 4) float32."""
    att16, fc16 = att.astype(np.float16), fc.astype(np.float16)
    _save(folders["att"] / f"{name}.npz", lambda f: np.savez(f, feat=att16))
    if folders["fc"]:
        _save(folders["fc"] / f"{name}.npy", lambda f: np.save(f, fc16))
    if folders["box"]:
        _save(folders["box"] / f"{name}.npy", lambda f: np.save(f, boxes))


def extract_shapes_regions(
    root: str | os.PathLike,
    att_dir: str | os.PathLike,
    fc_dir: str | os.PathLike | None = None,
    box_dir: str | os.PathLike | None = None,
    *,
    progress: bool = True,
) -> bool:
    """Write every shapes image's region features, unless an up-to-date set is there.

    Args:
        root: the shapes data set (generated: its manifest and caption files).
        att_dir: where ``<image_id>.npz`` region features go.
        fc_dir: where ``<image_id>.npy`` whole-image features go (None: not written).
        box_dir: where ``<image_id>.npy`` boxes go (None: not written).
        progress: show a tqdm bar.

    Returns:
        True when features were written, False when the existing ones were up to date.
    """
    root = Path(root)
    with exclusive_lock(Path(att_dir).parent / LOCK_NAME, f"shapes region features in {att_dir}"):
        return _extract(root, att_dir, fc_dir, box_dir, progress=progress)


def _extract(
    root: Path,
    att_dir: str | os.PathLike,
    fc_dir: str | os.PathLike | None,
    box_dir: str | os.PathLike | None,
    *,
    progress: bool,
) -> bool:
    """:func:`extract_shapes_regions`, once its lock is held."""
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        raise CaptioningError(
            f"{root} is not a generated shapes data set (no {MANIFEST_NAME}); generate it with "
            "tools/make_shapes.py or by training on it first"
        )
    folders = {
        "att": Path(att_dir),
        "fc": fc_dir and Path(fc_dir),
        "box": box_dir and Path(box_dir),
    }
    wanted = {
        "version": VERSION,
        "pool": POOL,
        "shapes": json.loads(manifest.read_text(encoding="utf-8")),
        "parts": sorted(k for k, v in folders.items() if v),
    }
    marker = folders["att"] / _MARKER
    try:
        if json.loads(marker.read_text(encoding="utf-8")) == wanted:
            log.info("shapes region features up to date in %s", folders["att"])
            return False
    except (OSError, ValueError):
        pass
    for folder in folders.values():
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)  # an interrupted extraction is redone next time
    entries = []
    for split in SPLITS:
        path = root / "annotations" / f"captions_{split}.json"
        if path.is_file():
            data = read_json(path, "shapes caption file", "regenerate the shapes data")
            entries += [(root / "images" / e["file_name"], e) for e in data["images"]]
    bar = tqdm(total=len(entries), desc="shapes regions", unit="img", disable=not progress)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread is several times faster than two
    try:
        for start in range(0, len(entries), _CHUNK):
            chunk = entries[start : start + _CHUNK]
            images, boxes = [], [object_boxes(e["objects"]) for _, e in chunk]
            for path, _ in chunk:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            for (_, entry), box, (fc, att) in zip(
                chunk, boxes, region_features(images, boxes), strict=True
            ):
                _write(folders, str(entry["id"]), fc, att, box)
            bar.update(len(chunk))
    finally:
        torch.set_num_threads(threads)
        bar.close()
    write_text_atomic(marker, json.dumps(wanted))
    log.info("wrote region features of %d shapes images to %s", len(entries), folders["att"])
    return True
