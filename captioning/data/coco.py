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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset

from captioning.data.images import MAX_PIXELS, ImageLoadError, load_image
from captioning.errors import CaptioningError
from captioning.text import tokenize
from captioning.vocab import Vocabulary

__all__ = [
    "CaptionDataset",
    "ImageDataset",
    "ImageRecord",
    "SkippedImage",
    "load_coco_captions",
    "load_karpathy",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRecord:
    """One image and all its reference captions."""

    image_id: int
    path: Path
    captions: tuple[str, ...]


class SkippedImage(NamedTuple):
    """A dataset item whose image could not be read; the collate functions drop and count it."""

    image_id: int
    reason: str  # the one-line ImageLoadError message, naming the file


def _few(items: Sequence[object], n: int = 5) -> str:
    """The first `n` items, and how many more there are: ``[3, 7] (and 12 more)``."""
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return f"{list(items[:n])}{more}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_json(path: Path, what: str, hint: str) -> Any:
    """Parse a JSON file; a missing or non-JSON file is a one-line CaptioningError."""
    if not path.is_file():
        raise CaptioningError(f"{what} not found: {path} ({hint})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CaptioningError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            f"it should be a {what}"
        ) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise CaptioningError(f"cannot read {path} as a {what} ({exc}); {hint}") from None


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
        k for k, im in enumerate(images) if not isinstance(im, dict) or not _is_int(im.get("id"))
    ]
    named = [im for im in images if isinstance(im, dict) and _is_int(im.get("id"))]
    no_name = [
        im["id"]
        for im in named
        if not isinstance(im.get("file_name"), str) or not im["file_name"].strip()
    ]
    twice = sorted(i for i, n in Counter(im["id"] for im in named).items() if n > 1)
    not_dict = [k for k, a in enumerate(anns) if not isinstance(a, dict) or "id" not in a]
    entries = [a for a in anns if isinstance(a, dict) and "id" in a]
    no_image = [a["id"] for a in entries if not _is_int(a.get("image_id"))]
    no_caption = [a["id"] for a in entries if not isinstance(a.get("caption"), str)]
    problems = [
        f"{text} {_few(found)}"
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
    data = _read_json(
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


def _report(source: Path, strict: bool, problems: list[tuple[str, list]], hint: str) -> None:
    """Raise for the problems found (`strict`), or log each kind with a count and examples."""
    found = [(text, items) for text, items in problems if items]
    if not found:
        return
    if strict:
        listed = "; ".join(f"{len(items)} {text} {_few(items, 3)}" for text, items in found)
        raise CaptioningError(f"{source}: {listed}; {hint}, or set data.strict=false to skip them")
    for text, items in found:
        log.warning("%s: skipped %d %s %s", source, len(items), text, _few(items, 3))


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
            if tokenize(ann["caption"]):
                captions.append(ann["caption"])
            else:
                empty.append(ann["id"])
        if captions:
            path = image_dir / coco.imgs[image_id]["file_name"]
            candidates.append(ImageRecord(int(image_id), path, tuple(captions)))
        else:
            uncaptioned.append(image_id)
    orphans = sorted(set(coco.imgToAnns) - set(coco.imgs))
    _report(
        annotation_file,
        strict,
        [
            ("empty or punctuation-only captions, annotation ids", empty),
            ("images without a caption, ids", uncaptioned),
            ("captions of image ids not in 'images':", orphans),
        ],
        "fix the annotation file",
    )
    records = _check_images(candidates, annotation_file, strict) if check_files else candidates
    if not records:
        raise CaptioningError(f"{annotation_file} gives no usable image with a caption")
    return records


def _check_images(records: list[ImageRecord], source: Path, strict: bool) -> list[ImageRecord]:
    """Keep the records whose image file exists; missing files are an error when `strict`."""
    missing = [r for r in records if not r.path.is_file()]
    if missing:
        message = (
            f"{len(missing)} of {len(records)} image files listed in {source} are missing, "
            f"e.g. {[str(r.path) for r in missing[:3]]} (image ids {_few([r.image_id for r in missing], 3)})"
        )
        if strict:
            raise CaptioningError(
                f"{message}; fix data.root / the image folder, or set data.strict=false to skip them"
            )
        log.warning("%s; skipped", message)
        gone = {r.image_id for r in missing}
        records = [r for r in records if r.image_id not in gone]
    return records


def _karpathy_entry(image: Any, root: Path) -> tuple[int, Path, list[str]] | None:
    """(cocoid, file, raw sentences) of one split-file entry; None if it lacks any of them."""
    try:
        image_id = image["cocoid"] if "cocoid" in image else image["imgid"]
        raw = [sentence["raw"] for sentence in image["sentences"]]
        name = image["filename"]
    except (KeyError, TypeError):
        return None
    if (
        not _is_int(image_id)
        or not isinstance(name, str)
        or not all(isinstance(r, str) for r in raw)
    ):
        return None
    return image_id, root / str(image.get("filepath", "")) / name, [r.strip() for r in raw]


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

    Entries of the chosen splits that lack ``cocoid``/``filename``/``sentences[*].raw`` are an
    error naming the first few. Sentences that are empty or only punctuation are dropped (and
    counted in the log); an image left with no caption, or whose file is missing, is an error
    when `strict` and is otherwise skipped and counted.

    Args:
        path: the split file.
        image_root: the folder holding ``train2014/`` and ``val2014/`` (``filepath`` is
            relative to it; files without ``filepath`` sit directly in it).
        splits: which of the file's splits to read, e.g. ``["train", "restval"]``.
        check_files: check that every image file exists.
        strict: images without a caption or without a file are errors (False: skipped).

    Returns:
        Records sorted by image id (``cocoid``).
    """
    path, image_root = Path(path), Path(image_root)
    hint = "download dataset_coco.json and set data.root / data.annotations"
    data = _read_json(path, "Karpathy split file", hint)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not all(isinstance(im, dict) for im in images):
        raise CaptioningError(
            f"{path} is not a Karpathy split file: it needs an 'images' list of objects"
        )
    wanted = set(splits)
    available = {str(im.get("split")) for im in images}
    if not wanted or wanted - available:
        raise CaptioningError(
            f"{path} has no split(s) {sorted(wanted - available) or '(none given)'}; "
            f"it has {sorted(available)}"
        )
    records, broken, uncaptioned, dropped = [], [], [], 0
    for k, image in enumerate(images):
        if image.get("split") not in wanted:
            continue
        entry = _karpathy_entry(image, image_root)
        if entry is None:
            broken.append(k)
            continue
        image_id, file, raw = entry
        captions = tuple(c for c in raw if tokenize(c))
        dropped += len(raw) - len(captions)
        if captions:
            records.append(ImageRecord(image_id, file, captions))
        else:
            uncaptioned.append(image_id)
    if broken:
        raise CaptioningError(
            f"{path}: image entries at positions {_few(broken)} lack an integer cocoid, a "
            "filename or sentences[*].raw; fix or remove them"
        )
    if dropped:
        log.info("%s: %d empty or punctuation-only sentences ignored", path, dropped)
    _report(
        path, strict, [("images without a caption, cocoids", uncaptioned)], "fix the split file"
    )
    records.sort(key=lambda r: r.image_id)
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        raise CaptioningError(
            f"{path}: cocoids {_few(twice)} appear twice in splits {sorted(wanted)}"
        )
    if check_files:
        records = _check_images(records, path, strict)
    if not records:
        raise CaptioningError(f"{path} gives no usable image with a caption in {sorted(wanted)}")
    return records


def _read_image(record: ImageRecord, transform: Callable, max_pixels: int | None) -> Any:
    """The record's transformed image, or a :class:`SkippedImage` when it cannot be read."""
    try:
        return transform(load_image(record.path, max_pixels=max_pixels))
    except ImageLoadError as exc:
        return SkippedImage(record.image_id, str(exc))


class CaptionDataset(Dataset):
    """Training view: item i is image i with all its captions (image tensor, [caption ids], id).

    An epoch covers every caption once. Captions of one image share one decoded, transformed
    image and, in the model, one encoder pass (neuraltalk2's ``seq_per_img``), which makes
    training with a learned encoder several times faster than one image load and encoder
    pass per caption. An image that cannot be read gives a :class:`SkippedImage` item instead
    (``collate_captions`` drops it and counts it in the batch), not an exception in a worker.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        vocab: Vocabulary,
        transform: Callable,
        *,
        max_len: int | None = None,
        max_pixels: int | None = MAX_PIXELS,
        seed: int | None = None,
    ) -> None:
        """Args:
        records: the images and their captions.
        vocab: maps words to ids (`<start>`/`<end>` added).
        transform: PIL image -> tensor (3, H, W).
        max_len: caption length cap in words (longer captions are truncated).
        max_pixels: larger images are skipped (see :func:`~captioning.data.images.load_image`).
        seed: for a random `transform` (augmentation): item i of epoch e is transformed with
            torch's generator seeded from ``(seed, e, i)``, whichever process loads it and
            whatever was loaded before (so resumed runs, and any number of loader workers, see
            the same augmentation); the caller's random state is left as it was. None: the
            transform draws from the global generator.
        """
        self.records = list(records)
        self.transform = transform
        self.max_pixels = max_pixels
        self.seed, self.epoch = seed, 0
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

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose items are loaded next (it seeds the augmentation, see ``seed``)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> tuple[Tensor, list[Tensor], int] | SkippedImage:
        record = self.records[index]
        if self.seed is None:
            image = _read_image(record, self.transform, self.max_pixels)
        else:
            with torch.random.fork_rng(devices=[]):  # the caller's CPU generator is restored
                key = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
                torch.manual_seed(key % (1 << 63))
                image = _read_image(record, self.transform, self.max_pixels)
        if isinstance(image, SkippedImage):
            return image
        return image, self.captions[index], record.image_id


class ImageDataset(Dataset):
    """Per-image view for evaluation: item i is (image tensor, image id); each image once.

    An image that cannot be read gives a :class:`SkippedImage` item (``collate_images`` drops
    it and names it in the batch, so evaluation leaves it out of scoring).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable,
        *,
        max_pixels: int | None = MAX_PIXELS,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | SkippedImage:
        record = self.records[index]
        image = _read_image(record, self.transform, self.max_pixels)
        return image if isinstance(image, SkippedImage) else (image, record.image_id)

    def references(self) -> dict[int, list[str]]:
        """All reference captions, by image id."""
        return {r.image_id: list(r.captions) for r in self.records}
