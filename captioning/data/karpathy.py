"""Karpathy's split files: ``dataset_coco.json``, ``dataset_flickr8k.json``, ``dataset_flickr30k.json``.

The files of "Deep Visual-Semantic Alignments" (Karpathy & Fei-Fei 2015), which the papers and the
popular tutorials train and report on, list every image once::

    {"dataset": "flickr8k", "images": [{"split": "train", "filename": "1000268201_693b08cb0e.jpg",
      "imgid": 0, "sentids": [0, 1, 2, 3, 4],
      "sentences": [{"raw": "A child in a pink dress ...", "tokens": [...], ...}, ...]}, ...]}

COCO's entries add ``cocoid`` (COCO's image id) and ``filepath`` (``train2014`` / ``val2014``).
An image's file is ``<image folder>/<filepath>/<filename>``, its id its ``cocoid`` when there is
one (COCO: the ids of the official results files) and its ``imgid`` otherwise (Flickr), its
captions the sentences' ``raw`` text (tokenized later, like every caption).

Splits as the files have them: COCO train 82,783 + restval 30,504 (the usual training set),
val 5,000, test 5,000; Flickr8k train 6,000, val 1,000, test 1,000; Flickr30k train 29,000,
val 1,014, test 1,000.

A run reads the file once for all its splits: the parsed entries of the last file read are
kept (keyed by path, size and modification time), so the training, validation and test splits
do not parse COCO's 140 MB three times.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

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

__all__ = ["load_karpathy"]

log = logging.getLogger(__name__)


class _Entry(NamedTuple):
    """One image of a split file, as read (``image_id`` None: the entry is malformed)."""

    split: str
    image_id: int | None
    file: str  # filepath/filename
    captions: tuple[str, ...]  # stripped, those with words
    dropped: int = 0  # sentences without a word


def _entry(image: dict) -> _Entry:
    split = str(image.get("split"))
    try:
        image_id = image["cocoid"] if "cocoid" in image else image["imgid"]
        raw = tuple([sentence["raw"] for sentence in image["sentences"]])
        name = image["filename"]
    except (KeyError, TypeError):
        return _Entry(split, None, "", ())
    folder = image.get("filepath", "")
    if (
        not is_int(image_id)
        or type(name) is not str
        or type(folder) is not str
        or not set(map(type, raw)) <= {str}
    ):
        return _Entry(split, None, "", ())
    captions = tuple(map(str.strip, raw))
    if not all(map(has_words, captions)):
        captions = tuple(c for c in captions if has_words(c))
    file = f"{folder}/{name}" if folder else name
    return _Entry(split, image_id, file, captions, len(raw) - len(captions))


# Karpathy's own tokenization of each sentence, which is not used (the project tokenizes
# `raw`): a "tokens" list of plain strings and the comma after it. Cut out of the text before
# parsing, they take half of COCO's file and 7M of its 10M strings with them (parsing gets
# about 4x faster and needs a third of the memory). The pattern cannot match inside a string
# (its quotes would be escaped there); if the result does not parse, the file is parsed whole.
_TOKENS = re.compile(rb'"tokens":\s*\[(?:\s*"[^"\\]*"\s*,?)*\s*\]\s*,\s*')


@lru_cache(maxsize=1)
def _read_entries(path: Path, stamp: tuple[int, int, int]) -> tuple[tuple[_Entry, ...], str]:
    """Every entry of the split file at `path` (``stamp``: its inode, size and mtime), and the
    name of its image ids (``cocoid`` or ``imgid``)."""
    hint = "download Karpathy's split file and set data.root / data.annotations"
    data = None
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):  # the whole file below says what is wrong
            data = json.loads(_TOKENS.sub(b"", path.read_bytes()))
    if data is None:
        data = read_json(path, "Karpathy split file", hint)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not all(isinstance(im, dict) for im in images):
        raise CaptioningError(
            f"{path} is not a Karpathy split file: it needs an 'images' list of objects"
        )
    id_name = "cocoid" if any("cocoid" in im for im in images[:100]) else "imgid"
    return tuple(map(_entry, images)), id_name


def load_karpathy(
    path: str | os.PathLike,
    image_root: str | os.PathLike,
    splits: Sequence[str],
    *,
    check_files: bool = True,
    strict: bool = True,
) -> list[ImageRecord]:
    """Read the images of some splits of a Karpathy split file.

    Entries of the chosen splits that lack an integer ``cocoid``/``imgid``, a ``filename`` or
    ``sentences[*].raw`` are an error naming the first few. Sentences that are empty or only
    punctuation are dropped (and counted in the log); an image left with no caption, or whose
    file is missing, is an error when `strict` and is otherwise skipped and counted.

    Args:
        path: the split file.
        image_root: the folder the entries' ``filepath/filename`` are relative to (COCO: the
            one holding ``train2014/`` and ``val2014/``; Flickr: the image folder itself).
        splits: which of the file's splits to read, e.g. ``["train", "restval"]``.
        check_files: check that every image file exists.
        strict: images without a caption or without a file are errors (False: skipped).

    Returns:
        Records sorted by image id.
    """
    path, image_root = Path(path), Path(image_root)
    try:
        st = path.stat()
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = (0, 0, 0)  # read_json says what is wrong
    entries, id_name = _read_entries(path, stamp)
    wanted = set(splits)
    available = {e.split for e in entries}
    if not wanted or wanted - available:
        raise CaptioningError(
            f"{path} has no split(s) {sorted(wanted - available) or '(none given)'}; "
            f"it has {sorted(available)}"
        )
    records, broken, uncaptioned, dropped = [], [], [], 0
    for k, entry in enumerate(entries):
        if entry.split not in wanted:
            continue
        if entry.image_id is None:
            broken.append(k)
            continue
        dropped += entry.dropped
        if entry.captions:
            records.append(ImageRecord(entry.image_id, image_root / entry.file, entry.captions))
        else:
            uncaptioned.append(entry.image_id)
    if broken:
        raise CaptioningError(
            f"{path}: image entries at positions {few(broken)} lack an integer {id_name}, a "
            "filename or sentences[*].raw; fix or remove them"
        )
    if dropped:
        log.info("%s: %d empty or punctuation-only sentences ignored", path, dropped)
    report_problems(
        path,
        strict,
        [(f"images without a caption, {id_name}s", uncaptioned)],
        "fix the split file",
    )
    records.sort(key=lambda r: r.image_id)
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        raise CaptioningError(
            f"{path}: {id_name}s {few(twice)} appear twice in splits {sorted(wanted)}"
        )
    if check_files:
        hint = "fix data.root / data.images (the image folder)"
        records = check_images(records, path, strict, hint=hint, splits=list(splits))
    if not records:
        raise CaptioningError(f"{path} gives no usable image with a caption in {sorted(wanted)}")
    return records
