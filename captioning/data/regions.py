"""Pre-extracted per-image region features (bottom-up attention), read lazily from disk.

Kept as one file (about 370 lines): the reader, the checks of its files and the datasets and
settings built on it share one layout.

The layout is the one ruotianluo/self-critical.pytorch reads (its ``captioning/data/dataloader.py``)
and its ``scripts/make_bu_data.py`` writes from the original TSV release::

    <fc_dir>/<image_id>.npy    (D_v,)     the image's global feature (optional)
    <att_dir>/<image_id>.npz   key "feat" (K, D_g) one row per region (K may differ per image)
    <box_dir>/<image_id>.npy   (K, 4)     region boxes x1, y1, x2, y2 in pixels (optional)

float16 or float32. ``.npy`` files are memory-mapped (``np.load(mmap_mode="r")``) and only the
item being read is touched; ``.npz`` files are zip archives and cannot be memory-mapped, so an
image's regions are read (and decompressed) whole when its item is read, never before.

As in the reference: without ``fc_dir`` the global feature is the mean of the regions; an
``.npz`` whose array is stored under ``z`` instead of ``feat`` is read too; an array of more
than two dimensions (a stored grid, H x W x C) is flattened to (H*W, C). With ``box_dir`` each
region gets the reference's five box features appended (its ``use_box``): ``x1/w, y1/h, x2/w,
y2/h, (x2-x1)(y2-y1)/(wh)`` with the image's width and height read from the image file's header.
Differences: the reference sorts the regions by box area when it appends box features (the
order does not matter to attention, so we keep the file's order); its ``norm_att_feat`` /
``norm_box_feat`` options are not offered.

A missing file for an image with captions is found when the dataset is built (an error naming
the file with ``data.strict``, otherwise the image is skipped and counted); an unreadable,
truncated or mis-shaped file is found when its item is read and is skipped and counted like an
unreadable image (``data.max_bad_image_fraction``), the reason naming the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from captioning.contracts import EncoderOutput
from captioning.data.config import DataConfig
from captioning.data.datasets import PerImageCaptions
from captioning.data.records import ImageRecord, SkippedImage, few
from captioning.errors import CaptioningError
from captioning.vocab import Vocabulary

__all__ = [
    "BOX_FEATURES",
    "RegionCaptionDataset",
    "RegionFeatureError",
    "RegionFeatures",
    "RegionImageDataset",
    "feature_sizes",
    "features_for",
    "keep_with_features",
    "region_features",
]

log = logging.getLogger(__name__)

#: box features appended to each region with ``box_dir`` (the reference's ``use_box``)
BOX_FEATURES = 5


class RegionFeatureError(CaptioningError):
    """A feature file that cannot be used (the message names it)."""


def _check_dtype(array: np.ndarray, path: Path) -> None:
    if array.dtype not in (np.float16, np.float32):
        raise RegionFeatureError(
            f"{path}: holds {array.dtype} values; region features must be float16 or float32"
        )


class RegionFeatures:
    """Reads one image's features from the per-image layout (see the module docstring).

    Args:
        att_dir: folder of ``<image_id>.npz`` region features.
        fc_dir: folder of ``<image_id>.npy`` global features (None: the mean of the regions).
        box_dir: folder of ``<image_id>.npy`` boxes (None: no box features).
        vector_dim: expected D_v (None: not checked).
        grid_dim: expected D_g, box features included (None: not checked).
    """

    def __init__(
        self,
        att_dir: str | os.PathLike,
        fc_dir: str | os.PathLike | None = None,
        box_dir: str | os.PathLike | None = None,
        *,
        vector_dim: int | None = None,
        grid_dim: int | None = None,
    ) -> None:
        self.att_dir = Path(att_dir)
        self.fc_dir = None if fc_dir is None else Path(fc_dir)
        self.box_dir = None if box_dir is None else Path(box_dir)
        self.vector_dim, self.grid_dim = vector_dim, grid_dim
        for what, folder in (("att", self.att_dir), ("fc", self.fc_dir), ("box", self.box_dir)):
            if folder is not None and not folder.is_dir():
                raise CaptioningError(
                    f"data.features.{what}_dir {folder} is not a folder; point it at the "
                    f"per-image {what} feature files (see the README, 'Pre-extracted features')"
                )

    def files(self, image_id: int | str) -> list[Path]:
        """The files an image needs: its regions, then its global feature and boxes if used."""
        names = [self.att_dir / f"{image_id}.npz"]
        names += [d / f"{image_id}.npy" for d in (self.fc_dir, self.box_dir) if d is not None]
        return names

    def _att(self, image_id: int | str) -> np.ndarray:
        path = self.att_dir / f"{image_id}.npz"
        try:
            with np.load(path) as archive:  # a zip: read whole, cannot be memory-mapped
                key = "feat" if "feat" in archive.files else "z" if "z" in archive.files else None
                if key is None:
                    raise RegionFeatureError(
                        f"{path}: has no 'feat' array (it holds {archive.files}); write the "
                        "regions with np.savez(path, feat=array)"
                    )
                att = archive[key]
        except RegionFeatureError:
            raise
        except Exception as exc:  # zip, pickle and numpy errors alike
            raise RegionFeatureError(
                f"{path}: cannot be read ({type(exc).__name__}: {exc})"
            ) from None
        _check_dtype(att, path)
        if att.ndim < 2 or att.shape[0] == 0 or att.shape[-1] == 0:
            raise RegionFeatureError(f"{path}: shape {att.shape}, expected (K, D) with K >= 1")
        return att.reshape(-1, att.shape[-1])  # (K, D)

    def _npy(self, path: Path) -> np.ndarray:
        try:
            array = np.load(path, mmap_mode="r")  # only mapped; read by the copy below
            _check_dtype(array, path)
            return np.array(array)
        except RegionFeatureError:
            raise
        except Exception as exc:  # truncated headers and data alike
            raise RegionFeatureError(
                f"{path}: cannot be read ({type(exc).__name__}: {exc})"
            ) from None

    def _box_features(self, image_id: int | str, record: ImageRecord | None, k: int) -> np.ndarray:
        path = self.box_dir / f"{image_id}.npy"
        boxes = self._npy(path).astype(np.float32)
        if boxes.shape != (k, 4):
            raise RegionFeatureError(
                f"{path}: shape {boxes.shape}, expected ({k}, 4) (one box per region)"
            )
        try:
            with Image.open(record.path) as image:  # the header only
                w, h = image.size
        except (OSError, AttributeError) as exc:
            where = record.path if record is not None else f"image {image_id}"
            raise RegionFeatureError(
                f"{where}: its width and height are needed to scale the boxes in {path} "
                f"({type(exc).__name__}); keep the images beside the features, or drop "
                "data.features.box_dir"
            ) from None
        x1, y1, x2, y2 = boxes.T  # each (K,)
        geometry = [x1 / w, y1 / h, x2 / w, y2 / h, (x2 - x1) * (y2 - y1) / (w * h)]
        return np.stack(geometry, axis=1)  # (K, 5)

    def read(self, image_id: int | str, record: ImageRecord | None = None) -> EncoderOutput:
        """One image's features: vector (D_v,), grid (K, D_g), as float32 tensors.

        Args:
            image_id: the image.
            record: its record (the image file gives the size that scales its boxes).

        Raises:
            RegionFeatureError: a file is missing, unreadable or of the wrong shape (named).
        """
        for path in self.files(image_id):
            if not path.is_file():
                raise RegionFeatureError(f"{path}: missing (image {image_id} has no features)")
        att = self._att(image_id).astype(np.float32)  # (K, D)
        if self.fc_dir is None:
            fc = att.mean(0)  # (D,) as the reference does without fc files
        else:
            path = self.fc_dir / f"{image_id}.npy"
            fc = self._npy(path).astype(np.float32).reshape(-1)
            if self.vector_dim is not None and fc.shape != (self.vector_dim,):
                raise RegionFeatureError(
                    f"{path}: shape {fc.shape}, expected ({self.vector_dim},) like the others"
                )
        if self.box_dir is not None:
            att = np.concatenate([att, self._box_features(image_id, record, len(att))], axis=1)
        if self.grid_dim is not None and att.shape[1] != self.grid_dim:
            boxes = f" ({BOX_FEATURES} box features included)" if self.box_dir is not None else ""
            raise RegionFeatureError(
                f"{self.att_dir / f'{image_id}.npz'}: regions of {att.shape[1]} features"
                f"{boxes}, expected {self.grid_dim} like the others"
            )
        return EncoderOutput(torch.from_numpy(fc), torch.from_numpy(att))

    def dims(self, record: ImageRecord) -> tuple[int, int]:
        """(D_v, D_g) of `record`'s files (what the decoder is built for)."""
        features = self.read(record.image_id, record)
        return int(features.vector.shape[0]), int(features.grid.shape[1])

    def item(self, record: ImageRecord) -> EncoderOutput | SkippedImage:
        """The record's features, or a :class:`SkippedImage` naming the bad file."""
        try:
            return self.read(record.image_id, record)
        except RegionFeatureError as exc:
            return SkippedImage(record.image_id, str(exc))


def keep_with_features(
    records: list[ImageRecord], features: RegionFeatures, *, strict: bool, split: str = ""
) -> list[ImageRecord]:
    """The records whose feature files all exist; others are an error (`strict`) or skipped.

    Args:
        records: a split's records.
        features: the feature folders.
        strict: ``data.strict``: a missing file is an error naming it (False: skipped, logged).
        split: the split's name, for messages.

    Returns:
        The records with features.
    """
    listed = {}
    for folder in (features.att_dir, features.fc_dir, features.box_dir):
        if folder is not None:
            listed[folder] = set(os.listdir(folder))  # one directory read, not a stat per file
    missing = [
        (r, path)
        for r in records
        for path in features.files(r.image_id)
        if path.name not in listed[path.parent]
    ]
    if not missing:
        return records
    which = f" of split {split!r}" if split else ""
    bad = {r.image_id for r, _ in missing}
    message = (
        f"{len(bad)} images{which} have captions but no features, e.g. {missing[0][1]} is "
        f"missing (image ids {few(sorted(bad), 3)})"
    )
    if strict:
        raise CaptioningError(
            f"{message}; extract or convert their features, or set data.strict=false to skip them"
        )
    log.warning("%s; skipped", message)
    return [r for r in records if r.image_id not in bad]


class RegionCaptionDataset(PerImageCaptions):
    """Training view: item i is (features of image i, [caption ids], id), like the feature cache's.

    Args:
        features: the feature reader.
        records: the images and their captions.
        vocab: maps words to ids.
        **captions: ``max_len``, ``tokens``, ``captions_per_image``, ``seed``
            (:class:`~captioning.data.datasets.PerImageCaptions`).
    """

    def __init__(
        self,
        features: RegionFeatures,
        records: Sequence[ImageRecord],
        vocab: Vocabulary,
        **captions: Any,
    ) -> None:
        super().__init__(records, vocab, **captions)
        self.features = features

    def _input(self, index: int) -> EncoderOutput | SkippedImage:
        return self.features.item(self.records[index])


class RegionImageDataset(Dataset):
    """Evaluation view: item i is (features of image i, image id); each image once."""

    def __init__(self, features: RegionFeatures, records: Sequence[ImageRecord]) -> None:
        self.features, self.records = features, list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[EncoderOutput, int] | SkippedImage:
        record = self.records[index]
        item = self.features.item(record)
        return item if isinstance(item, SkippedImage) else (item, record.image_id)


def region_features(
    data: DataConfig, *, vector_dim: int | None = None, grid_dim: int | None = None
) -> RegionFeatures:
    """The reader of ``data.features`` (folders relative to ``data.root`` unless absolute).

    Args:
        data: the data settings, with ``data.features.att_dir`` set.
        vector_dim: expected D_v (None: not checked).
        grid_dim: expected D_g (None: not checked).
    """
    spec = data.features
    if not spec.enabled:
        raise CaptioningError(
            "encoder=precomputed reads pre-extracted features: set data.features.att_dir (and "
            "optionally fc_dir, box_dir) to their folders (see the README, 'Pre-extracted "
            "features')"
        )
    root = Path(data.root)
    folder = {k: None if v is None else root / v for k, v in vars(spec).items()}  # abs stays
    return RegionFeatures(
        folder["att_dir"],
        folder["fc_dir"],
        folder["box_dir"],
        vector_dim=vector_dim,
        grid_dim=grid_dim,
    )


def features_for(data: DataConfig, encoder: object) -> RegionFeatures | None:
    """The feature reader a model's data comes from: ``data.features`` when its encoder reads
    features (``encoder=precomputed``, checked against its sizes), else None (images)."""
    if not getattr(encoder, "reads_features", False):
        return None
    return region_features(data, vector_dim=encoder.vector_dim, grid_dim=encoder.grid_dim)


def feature_sizes(data: DataConfig) -> tuple[int, int]:
    """(D_v, D_g) of the features in ``data.features``, read from the first region file found
    (and that image's global-feature file); box features count in D_g."""
    features = region_features(data)
    with os.scandir(features.att_dir) as entries:
        first = next((e.name for e in entries if e.name.endswith(".npz")), None)
    if first is None:
        raise CaptioningError(
            f"data.features.att_dir {features.att_dir} holds no <image_id>.npz file; extract "
            "or convert the features first (see the README, 'Pre-extracted features')"
        )
    image_id = first[: -len(".npz")]
    att = features._att(image_id)  # (K, D)
    vector_dim = att.shape[1]
    if features.fc_dir is not None:
        path = features.fc_dir / f"{image_id}.npy"
        if not path.is_file():
            raise RegionFeatureError(f"{path}: missing (image {image_id} has no fc feature)")
        vector_dim = int(np.prod(np.load(path, mmap_mode="r").shape))
    boxes = BOX_FEATURES if features.box_dir is not None else 0
    return int(vector_dim), int(att.shape[1] + boxes)
