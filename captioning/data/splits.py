"""From the ``data`` settings to a split's records: which reader, which files, which split names.

``load_split(data, "train")`` is what training, evaluation and ``tools/evaluate.py`` call; it
dispatches on ``data.format`` to :mod:`captioning.data.coco` (COCO caption files),
:mod:`captioning.data.karpathy` (Karpathy's split files: COCO, Flickr8k, Flickr30k) or
:mod:`captioning.data.folder` (a user's CSV / JSON Lines file).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from captioning.data.coco import load_coco_captions
from captioning.data.config import DataConfig, data_config
from captioning.data.folder import find_annotations, load_folder
from captioning.data.karpathy import load_karpathy
from captioning.data.records import ImageRecord
from captioning.data.regions import keep_with_features, region_features
from captioning.errors import CaptioningError

__all__ = ["load_split"]

log = logging.getLogger(__name__)


def load_split(data: DataConfig | Mapping[str, Any], split: str) -> list[ImageRecord]:
    """Records of one split as the ``data`` settings describe it.

    Args:
        data: the ``data`` settings, by ``format``:

            * ``coco``: ``root`` and ``splits.<split>.{annotations,images}`` (COCO files);
            * ``karpathy``: ``annotations`` (the split file, relative to ``root``), ``images``
              (the folder its file names are relative to; null: ``root``) and
              ``splits.<split>: [names of the file's splits]``;
            * ``folder``: ``annotations`` (a CSV / JSON Lines file in ``root``; null: the only
              one there), ``images`` (null: the file's folder), ``splits.<split>: [names in
              its split column]``, and without that column ``val_fraction``,
              ``test_fraction`` and ``seed``.
        split: e.g. ``"train"``, ``"val"``, ``"test"``.

    Returns:
        The split's image records. With ``data.features`` (pre-extracted features) the image
        files need not exist; each record's feature files must (missing ones: an error, or
        skipped with ``data.strict=false``).
    """
    data = data_config(data, legacy=True)
    records = _load_split(data, split)
    if data.features.enabled:
        records = keep_with_features(
            records, region_features(data), strict=data.strict, split=split
        )
    return records


def _load_split(data: DataConfig, split: str) -> list[ImageRecord]:
    check_files = not data.features.enabled  # features are read instead of the images
    if split not in data.splits:
        raise CaptioningError(f"data config has no split {split!r}; it has {sorted(data.splits)}")
    root, spec = Path(data.root), data.splits[split]
    if data.format in ("karpathy", "folder"):
        names = _split_names(data.splits, split)
        images = _image_folder(root, data.images)
        if data.format == "folder":
            return load_folder(
                find_annotations(root, data.annotations),
                names,
                image_root=images,
                known_splits={n for s in data.splits for n in _split_names(data.splits, s)},
                strict=data.strict,
                check_files=check_files,
                **_fraction_split(data),
            )
        if not data.annotations:
            raise CaptioningError("data.format=karpathy needs data.annotations (the split file)")
        return load_karpathy(
            root / data.annotations,
            images or root,
            names,
            strict=data.strict,
            check_files=check_files,
        )
    if not isinstance(spec, Mapping) or not {"annotations", "images"} <= set(spec):
        raise CaptioningError(
            f"data.splits.{split} needs 'annotations' and 'images' (paths relative to data.root), "
            f"got {spec!r}"
        )
    return load_coco_captions(
        root / str(spec["annotations"]),
        root / str(spec["images"]),
        strict=data.strict,
        check_files=check_files,
    )


def _split_names(splits: Mapping[str, Any], split: str) -> list[str]:
    """``data.splits.<split>`` of a split file or captions file: a name or a list of names."""
    spec = splits[split]
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, Sequence) and spec and all(isinstance(n, str) for n in spec):
        return list(spec)
    raise CaptioningError(
        f"data.splits.{split} must name the file's split(s), e.g. [train] or [train, restval]; "
        f"got {spec!r}"
    )


def _fraction_split(data: DataConfig) -> dict[str, Any]:
    """The fraction split's settings that the config gives (the others keep their defaults)."""
    given = {"val_fraction": data.val_fraction, "test_fraction": data.test_fraction}
    given["seed"] = data.seed
    return {key: value for key, value in given.items() if value is not None}


def _image_folder(root: Path, images: str | None) -> Path | None:
    """``root/images``; when that folder does not exist, ``root`` (with a warning)."""
    if not images:
        return None
    folder = root / images
    if folder.is_dir():
        return folder
    log.warning(
        "image folder %s not found: looking for the images in %s (data.images)", folder, root
    )
    return root


def annotation_files(data: DataConfig | Mapping[str, Any], split: str) -> list[Path]:
    """The annotation files a split is read from (what the feature cache's key hashes)."""
    data = data_config(data, legacy=True)
    root, spec = Path(data.root), data.splits.get(split)
    if data.format == "folder":
        return [find_annotations(root, data.annotations)]
    if data.format == "karpathy" and data.annotations:
        return [root / data.annotations]
    if isinstance(spec, Mapping) and "annotations" in spec:
        return [root / str(spec["annotations"])]
    return []
