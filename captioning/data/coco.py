"""COCO-format caption data: records, a per-caption view (training), a per-image view (evaluation).

Every caption source (COCO 2014 files, the shapes data, Karpathy's split file) is read into the
same :class:`ImageRecord` list, so everything downstream has one code path.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset

from captioning.data.images import load_image
from captioning.errors import CaptioningError
from captioning.text import tokenize
from captioning.vocab import Vocabulary

__all__ = ["CaptionDataset", "ImageDataset", "ImageRecord", "load_coco_captions", "load_karpathy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRecord:
    """One image and all its reference captions."""

    image_id: int
    path: Path
    captions: tuple[str, ...]


def _read_coco(annotation_file: Path) -> COCO:
    if not annotation_file.is_file():
        raise CaptioningError(
            f"annotation file not found: {annotation_file} (check data.root and the split's file name)"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return COCO(str(annotation_file))
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise CaptioningError(
            f"{annotation_file} is not a COCO caption annotation file ({type(exc).__name__}: {exc})"
        ) from None


def load_coco_captions(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    check_files: bool = True,
    strict: bool = True,
) -> list[ImageRecord]:
    """Read a COCO caption annotation file into image records.

    Args:
        annotation_file: `captions_*.json` with `images` and `annotations`.
        image_dir: folder that the images' `file_name` entries are relative to.
        check_files: check that every image file exists.
        strict: with `check_files`, a missing image file is an error; otherwise it is skipped
            and counted in the log (the first few are named).

    Returns:
        Records sorted by image id; images with no caption are left out (and logged).
    """
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    coco = _read_coco(annotation_file)
    if "images" not in coco.dataset or "annotations" not in coco.dataset:
        raise CaptioningError(f"{annotation_file} needs both 'images' and 'annotations' lists")
    records, missing, uncaptioned, empty = [], [], [], []
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        if "file_name" not in info:
            raise CaptioningError(f"{annotation_file}: image {image_id} has no 'file_name'")
        anns = coco.imgToAnns.get(image_id, [])
        captions = []
        for ann in anns:
            if "caption" not in ann:
                raise CaptioningError(
                    f"{annotation_file}: annotation {ann.get('id')} has no 'caption'"
                )
            if tokenize(str(ann["caption"])):
                captions.append(str(ann["caption"]))
            else:
                empty.append(ann.get("id"))
        if not captions:
            uncaptioned.append(image_id)
            continue
        path = image_dir / info["file_name"]
        if check_files and not path.is_file():
            missing.append(str(path))
            continue
        records.append(ImageRecord(int(image_id), path, tuple(captions)))
    orphans = sorted(set(coco.imgToAnns) - set(coco.imgs))
    if orphans:
        raise CaptioningError(
            f"{annotation_file}: captions refer to image ids not in 'images': {orphans[:5]}"
        )
    if empty:
        log.warning(
            "%s: %d empty or punctuation-only captions ignored (annotation ids %s)",
            annotation_file,
            len(empty),
            empty[:5],
        )
    if uncaptioned:
        log.warning(
            "%s: %d images without captions left out (ids %s)",
            annotation_file,
            len(uncaptioned),
            uncaptioned[:5],
        )
    if missing:
        message = f"{len(missing)} image files listed in {annotation_file} are missing, e.g. {missing[:3]}"
        if strict:
            raise CaptioningError(
                message + " (fix data.root / the image folder, or set strict=false)"
            )
        log.warning("%s; skipped", message)
    if not records:
        raise CaptioningError(f"{annotation_file} gives no usable image with a caption")
    return records


def _check_images(records: list[ImageRecord], source: Path, strict: bool) -> list[ImageRecord]:
    """Keep the records whose image file exists; missing files are an error when `strict`."""
    missing = [str(r.path) for r in records if not r.path.is_file()]
    if missing:
        message = f"{len(missing)} image files listed in {source} are missing, e.g. {missing[:3]}"
        if strict:
            raise CaptioningError(f"{message} (fix data.root / the images, or set strict=false)")
        log.warning("%s; skipped", message)
        gone = set(missing)
        records = [r for r in records if str(r.path) not in gone]
    return records


def load_karpathy(
    path: str | os.PathLike,
    image_root: str | os.PathLike,
    splits: Sequence[str],
    *,
    check_files: bool = True,
    strict: bool = True,
) -> list[ImageRecord]:
    """Read images of some splits of Karpathy's split file (``dataset_coco.json``).

    The file lists every image once with its ``split`` (``train``, ``restval``, ``val``,
    ``test``), ``filepath`` (``train2014`` / ``val2014``), ``filename``, ``cocoid`` and
    ``sentences``; the captions are the sentences' ``raw`` text (tokenized later, like COCO's).
    The usual training set is ``train`` + ``restval`` (113,287 images); ``val`` and ``test``
    have 5,000 images each.

    Args:
        path: the split file.
        image_root: the folder holding ``train2014/`` and ``val2014/`` (``filepath`` is
            relative to it; files without ``filepath`` sit directly in it).
        splits: which of the file's splits to read, e.g. ``["train", "restval"]``.
        check_files: check that every image file exists.
        strict: with `check_files`, a missing image file is an error; otherwise it is skipped.

    Returns:
        Records sorted by image id (``cocoid``); images whose captions are all empty are left out.
    """
    path, image_root = Path(path), Path(image_root)
    if not path.is_file():
        raise CaptioningError(
            f"Karpathy split file not found: {path} (download dataset_coco.json and set "
            "data.root / data.annotations)"
        )
    try:
        images = json.loads(path.read_text())["images"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CaptioningError(
            f"{path} is not a Karpathy split file with an 'images' list ({type(exc).__name__})"
        ) from None
    wanted = set(splits)
    available = {str(im.get("split")) for im in images}
    if not wanted or wanted - available:
        raise CaptioningError(
            f"{path} has no split(s) {sorted(wanted - available) or '(none given)'}; "
            f"it has {sorted(available)}"
        )
    records = []
    for k, image in enumerate(images):
        if image.get("split") not in wanted:
            continue
        try:
            image_id = int(image["cocoid"] if "cocoid" in image else image["imgid"])
            file = image_root / image.get("filepath", "") / image["filename"]
            raw = [str(sentence["raw"]).strip() for sentence in image["sentences"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CaptioningError(
                f"{path}: image entry {k} lacks cocoid/filename/sentences[*].raw ({exc})"
            ) from None
        captions = tuple(c for c in raw if tokenize(c))
        if captions:
            records.append(ImageRecord(image_id, file, captions))
    records.sort(key=lambda r: r.image_id)
    if len({r.image_id for r in records}) != len(records):
        raise CaptioningError(f"{path}: the same cocoid appears twice in splits {sorted(wanted)}")
    if check_files:
        records = _check_images(records, path, strict)
    if not records:
        raise CaptioningError(f"{path} gives no usable image with a caption in {sorted(wanted)}")
    return records


class CaptionDataset(Dataset):
    """Training view: item i is image i with all its captions (image tensor, [caption ids], id).

    An epoch covers every caption once. Captions of one image share one decoded, transformed
    image and, in the model, one encoder pass (neuraltalk2's ``seq_per_img``), which makes
    training with a learned encoder several times faster than one image load and encoder
    pass per caption.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        vocab: Vocabulary,
        transform: Callable,
        *,
        max_len: int | None = None,
    ) -> None:
        """Args:
        records: the images and their captions.
        vocab: maps words to ids (`<start>`/`<end>` added).
        transform: PIL image -> tensor (3, H, W).
        max_len: caption length cap in words (longer captions are truncated).
        """
        self.records = list(records)
        self.transform = transform
        # captions are encoded once, up front
        self.captions = [
            [torch.tensor(vocab.encode(c, max_len=max_len), dtype=torch.long) for c in rec.captions]
            for rec in self.records
        ]

    @property
    def num_captions(self) -> int:
        """Captions in one epoch."""
        return sum(len(c) for c in self.captions)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, list[Tensor], int]:
        record = self.records[index]
        return self.transform(load_image(record.path)), self.captions[index], record.image_id


class ImageDataset(Dataset):
    """Per-image view for evaluation: item i is (image tensor, image id); each image once."""

    def __init__(self, records: Sequence[ImageRecord], transform: Callable) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        record = self.records[index]
        return self.transform(load_image(record.path)), record.image_id

    def references(self) -> dict[int, list[str]]:
        """All reference captions, by image id."""
        return {r.image_id: list(r.captions) for r in self.records}
