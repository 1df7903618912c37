"""``data`` settings: which data set, where, and how its images and captions are read.

The values live in ``conf/data/`` (and ``conf/base_data.yaml``, what every data set shares);
this dataclass says which keys exist and what they may hold (see :mod:`captioning.settings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from captioning.data.images import MAX_PIXELS
from captioning.settings import bounded, parse_settings

__all__ = ["LEGACY_DATA_DEFAULTS", "DataConfig", "FeaturesConfig", "data_config"]

#: Values for keys that configs saved in older checkpoints may lack (the keys were added later,
#: with these values as their defaults then); used only by :func:`data_config` with
#: ``legacy=True``, never for a config composed from ``conf/``.
LEGACY_DATA_DEFAULTS: dict[str, Any] = {
    "format": "coco",
    "max_len": None,
    "captions_per_image": None,
    "min_count": 1,
    "strict": True,
    "augment": False,
    "feature_cache": "auto",
    "image_cache": "auto",
    "image_cache_gb": 2.0,
    "cache_dir": "cache/features",
    "max_bad_image_fraction": 0.001,
    "max_pixels": MAX_PIXELS,
    "instances": None,
    "features": {"fc_dir": None, "att_dir": None, "box_dir": None, "extract": None},
}


@dataclass(frozen=True)
class FeaturesConfig:
    """``data.features``: pre-extracted per-image features read instead of images
    (``encoder=precomputed``; :mod:`captioning.data.regions`). Folders relative to ``data.root``
    unless absolute."""

    att_dir: str | None  # <image_id>.npz, key "feat": (K, D_g) region features
    fc_dir: str | None  # <image_id>.npy: (D_v,) global features (null: mean of the regions)
    box_dir: str | None  # <image_id>.npy: (K, 4) boxes x1, y1, x2, y2 (null: no box features)
    # shapes: written on first use from the generator's object boxes
    # (captioning.data.shapes_regions; null: the files must exist)
    extract: Literal["shapes"] | None

    @property
    def enabled(self) -> bool:
        """Whether features are read instead of images."""
        return self.att_dir is not None


@dataclass(frozen=True)
class DataConfig:
    """``data``: which data set, where, and how its images and captions are read (conf/data/)."""

    root: str
    format: Literal["coco", "karpathy", "folder"]
    splits: dict[str, Any]
    max_len: int | None = bounded(ge=1)
    captions_per_image: int | None = bounded(ge=1)  # per image and epoch, drawn afresh (null: all)
    min_count: int = bounded(ge=1)
    strict: bool
    augment: bool
    feature_cache: Literal["auto", "true", "false", True, False]
    cache_dir: str
    image_cache: Literal["auto", "true", "false", True, False]
    image_cache_gb: float = bounded(ge=0.0)
    max_bad_image_fraction: float = bounded(ge=0.0, le=1.0)
    max_pixels: int | None = bounded(ge=1)
    instances: str | None  # COCO instance annotations (relative to root), for CHAIR
    features: FeaturesConfig  # pre-extracted features (encoder=precomputed)
    name: str | None = None  # a label for logs (every file in conf/data/ sets it)
    # karpathy: the split file; folder: the CSV / JSON Lines file (null: the only one in root)
    annotations: str | None = None
    # karpathy, folder: the folder image paths are relative to, under root (null: root for a
    # split file, the captions file's folder for folder data)
    images: str | None = None
    generate: Literal["shapes"] | None = None  # shapes: generated on first use
    seed: int | None = None  # shapes: generator seed; folder: seed of the fraction split
    sizes: dict[str, int] | None = None  # shapes: images per split
    # folder without a split column: shares of the images for val and test (the rest trains)
    val_fraction: float | None = field(default=None, metadata={"ge": 0.0, "le": 1.0})
    test_fraction: float | None = field(default=None, metadata={"ge": 0.0, "le": 1.0})


def data_config(node: Mapping[str, Any], *, legacy: bool = False) -> DataConfig:
    """Parse a ``data`` node.

    Args:
        node: the ``data`` mapping.
        legacy: fill keys an older checkpoint's config lacks from :data:`LEGACY_DATA_DEFAULTS`.

    Returns:
        The typed settings.
    """
    if isinstance(node, DataConfig):
        return node
    if legacy and isinstance(node, Mapping):
        node = {**LEGACY_DATA_DEFAULTS, **node}
    return parse_settings(DataConfig, node, "data")
