"""A user's own images and captions: one CSV or JSON Lines file of ``image, caption`` rows.

Kept as one file (about 360 lines): the CSV/TSV and JSON Lines readers share every row check
and its message.

CSV (``.csv``; ``.tsv`` tab-separated; any other name is read as CSV), a header line first::

    image,caption,split                  <- split is optional
    beach/dog.jpg,A dog runs along the beach.,train
    beach/dog.jpg,"A brown dog on the sand, near the water.",train
    park.jpg,Two children on a swing.,val

JSON Lines (``.jsonl`` / ``.ndjson``), one object per line, ``caption`` a string or
``captions`` a list of them::

    {"image": "beach/dog.jpg", "caption": "A dog runs along the beach.", "split": "train"}
    {"image": "park.jpg", "captions": ["Two children on a swing.", "Kids at a playground."]}

An image may have any number of rows (all its captions are its references). Image paths are
relative to the file's folder (or to ``data.images``), absolute paths are used as they are.
Columns other than these are ignored; a CSV row with more fields than the header, whose last
column is ``caption``, had unquoted commas in its caption and is joined back.

**Image ids** are 1, 2, 3, ... in the order of each image's first row in the file (the same
path spelt differently, ``./a.jpg`` and ``a.jpg``, is one image). Results files and scores use
them; they stay the same while rows are only added at the end.

**Splits.** With a ``split`` column, each image's rows name its split, and ``data.splits`` maps
the run's splits to those names (``val: [val]``; ``val: [dev]`` for a file that says ``dev``);
a name that ``data.splits`` does not list is an error. Without one, the images are split at
random: a permutation seeded with ``data.seed`` puts ``data.test_fraction`` of them in ``test``,
``data.val_fraction`` in ``val`` (each at least one image when its fraction is above 0) and the
rest in ``train``; the same file and seed always give the same split.

Rows are read by the csv module (a quoted caption may span lines and keeps its line break) or
split at JSON Lines' line breaks only (U+2028, U+0085 or a form feed inside a caption is part of
it). A row repeating an earlier row's image and caption is counted once (a warning says which).

Checks, like COCO's: malformed lines, a header without ``image`` and ``caption``, unknown split
names and images given two splits are errors; captions with no word and missing image files are
errors when ``data.strict`` (otherwise skipped and counted). Each names the first few lines.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Collection, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from captioning.data.records import ImageRecord, check_images, few, report_problems
from captioning.errors import CaptioningError
from captioning.text import has_words

__all__ = ["find_annotations", "load_folder", "split_by_fraction"]

log = logging.getLogger(__name__)

JSON_LINES = (".jsonl", ".ndjson")
SUFFIXES = (".csv", ".tsv", *JSON_LINES)  # what find_annotations looks for
SPLITS = ("train", "val", "test")  # the splits a fraction split makes


class _Row(NamedTuple):
    line: int  # 1-based line in the file
    image: str
    caption: str
    split: str | None  # None: the file has no split column


def find_annotations(root: str | os.PathLike, annotations: str | None) -> Path:
    """The annotation file: ``root/annotations``, or the only CSV / JSON Lines file in `root`.

    Args:
        root: the data folder (``data.root``).
        annotations: the file, relative to `root` (None: look for it).

    Returns:
        The file's path.
    """
    root = Path(root)
    if annotations:
        return root / annotations
    found = sorted(p for p in root.glob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if len(found) != 1:
        what = f"several: {[p.name for p in found][:5]}" if found else "none"
        raise CaptioningError(
            f"data.root {root} should hold one captions file (.csv, .tsv or .jsonl) and holds "
            f"{what}; name it with data.annotations=FILE"
        )
    return found[0]


def _csv_rows(path: Path, lines: Iterable[str]) -> tuple[list[_Row], list[int]]:
    """The rows of a CSV / TSV file read by the csv module (``lines``: the open file).

    A quoted field may span lines ("A dog\non grass" stays one caption with its line break);
    a row's line number is the line it starts on.
    """
    reader = csv.reader(lines, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    header = [h.strip().lower() for h in next(reader, [])]
    if "image" not in header or "caption" not in header:
        raise CaptioningError(
            f"{path}: the first line must be a header naming the columns image and caption "
            f"(and optionally split), e.g. 'image,caption'; found {header[:6]}"
        )
    col = {name: header.index(name) for name in ("image", "caption", "split") if name in header}
    joins = col["caption"] == len(header) - 1  # unquoted commas in the last column
    rows, bad = [], []
    end = reader.line_num  # the last line read so far
    for fields in reader:
        line, end = end + 1, reader.line_num  # the row's first line
        if not any(f.strip() for f in fields):
            continue  # blank line
        if len(fields) < len(header):
            bad.append(line)
            continue
        caption = fields[col["caption"]]
        if joins and len(fields) > len(header):
            caption = ",".join(fields[col["caption"] :])
        split = fields[col["split"]].strip() if "split" in col else None
        rows.append(_Row(line, fields[col["image"]].strip(), caption.strip(), split))
    return rows, bad


def _jsonl_rows(lines: list[str]) -> tuple[list[_Row], list[int]]:
    """The rows of a JSON Lines file split at its line breaks (see :func:`_json_lines`)."""
    rows, bad = [], []
    has_split = False
    for k, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError:
            item = None
        captions = item.get("captions", item.get("caption")) if isinstance(item, dict) else None
        captions = [captions] if isinstance(captions, str) else captions
        split = item.get("split") if isinstance(item, dict) else None
        if (
            not isinstance(item.get("image") if isinstance(item, dict) else None, str)
            or not isinstance(captions, list)
            or not all(isinstance(c, str) for c in captions)
            or not isinstance(split, str | None)
        ):
            bad.append(k)
            continue
        has_split |= split is not None
        rows += [_Row(k, item["image"].strip(), c.strip(), split) for c in captions]
    if has_split:  # a file with splits gives every row one
        rows = [r._replace(split=r.split.strip() if r.split else "") for r in rows]
    return rows, bad


@lru_cache(maxsize=1)
def _read_rows(path: Path, stamp: tuple[int, int, int]) -> tuple[_Row, ...]:
    """The rows of the file at `path` (``stamp``: inode, size, mtime: re-read when it changes)."""
    if not path.is_file():
        raise CaptioningError(
            f"captions file not found: {path} (set data.root and data.annotations)"
        )
    jsonl = path.suffix.lower() in JSON_LINES
    try:
        # newline="": no line-break translation; the csv module (or _json_lines) finds the rows
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows, bad = _jsonl_rows(_json_lines(f.read())) if jsonl else _csv_rows(path, f)
    except (OSError, UnicodeDecodeError) as exc:
        raise CaptioningError(f"cannot read {path} as UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise CaptioningError(f"{path}: not a valid CSV file ({exc}); fix its quoting") from None
    if jsonl:
        what = 'JSON objects with an "image" string and a "caption" string (or "captions" list)'
    else:
        what = "rows with a field for every column of the header"
    if bad:
        raise CaptioningError(f"{path}: lines {few(bad)} are not {what}; fix or remove them")
    no_image = [r.line for r in rows if not r.image]
    if no_image:
        raise CaptioningError(f"{path}: lines {few(no_image)} have no image path")
    if not rows:
        raise CaptioningError(f"{path} has no rows of images and captions")
    return tuple(rows)


def _json_lines(text: str) -> list[str]:
    """The lines of a JSON Lines file: split at ``\n`` (and ``\r\n``, or a lone ``\r``, which no
    JSON value holds raw), never at the other breaks ``str.splitlines`` knows (U+2028, U+0085,
    a form feed), which a caption string may hold."""
    return re.split(r"\r\n|\r|\n", text)


def split_by_fraction(n: int, val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """The split of each of `n` images: a seeded permutation, test first, then val, then train.

    Args:
        n: images.
        val_fraction: share of them for validation (at least one image when above 0).
        test_fraction: share of them for testing (at least one image when above 0).
        seed: seeds the permutation (``numpy.random.default_rng``).

    Returns:
        ``"train"``, ``"val"`` or ``"test"`` per image.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise CaptioningError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be "
            "in [0, 1) and add up to less than 1 (the rest is for training)"
        )
    n_test, n_val = (max(round(f * n), 1) if f > 0 else 0 for f in (test_fraction, val_fraction))
    if n_test + n_val >= n:
        raise CaptioningError(
            f"{n} images are too few for data.val_fraction={val_fraction} and "
            f"data.test_fraction={test_fraction}: nothing would be left for training"
        )
    labels = np.full(n, "train", dtype=object)
    order = np.random.default_rng(seed).permutation(n)
    labels[order[:n_test]] = "test"
    labels[order[n_test : n_test + n_val]] = "val"
    return labels.tolist()


def load_folder(
    path: str | os.PathLike,
    splits: Sequence[str],
    *,
    image_root: str | os.PathLike | None = None,
    known_splits: Collection[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    check_files: bool = True,
    strict: bool = True,
) -> list[ImageRecord]:
    """Read the images of some splits of a CSV / JSON Lines captions file.

    Args:
        path: the file (see the module's description of its forms).
        splits: the split names to read (values of the split column, or ``train`` / ``val`` /
            ``test`` of the fraction split), e.g. ``["val"]``.
        image_root: the folder the image paths are relative to (None: the file's folder).
        known_splits: every split name the run uses; a split column value outside them is an
            error (None: any value).
        val_fraction: without a split column, share of the images for ``val``.
        test_fraction: without a split column, share of the images for ``test``.
        seed: seeds the fraction split.
        check_files: check that every image file exists.
        strict: captions without words and missing image files are errors (False: skipped).

    Returns:
        The records of those splits, by image id.
    """
    path = Path(path)
    try:
        st = path.stat()
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = (0, 0, 0)  # _read_rows says what is wrong
    rows = _read_rows(path, stamp)
    images = _group(rows, path, known_splits)
    if rows[0].split is None:
        labels = split_by_fraction(len(images), val_fraction, test_fraction, seed)
        images = {name: im._replace(split=labels[im.image_id - 1]) for name, im in images.items()}
    empty = [row.line for row in rows if not has_words(row.caption)]
    report_problems(
        path, strict, [("captions without a word, at lines", empty)], "fix the captions"
    )
    root = path.parent if image_root is None else Path(image_root)
    wanted = set(splits)
    chosen = [(name, im) for name, im in images.items() if im.split in wanted]
    records = [
        ImageRecord(im.image_id, root / name, im.captions) for name, im in chosen if im.captions
    ]
    report_problems(
        path,
        strict,
        [
            (
                "images left without a caption, first rows at lines",
                [im.first_line for _, im in chosen if not im.captions],
            )
        ],
        "fix the captions",
    )
    if check_files:
        first_line = {im.image_id: im.first_line for _, im in chosen}
        records = check_images(
            records,
            path,
            strict,
            name=lambda missing: ("first rows at lines", [first_line[r.image_id] for r in missing]),
            hint=f"the image paths are relative to {root} (data.images changes that)",
            splits=list(splits),
        )
    if not records:
        how = (
            "its split column; data.splits maps the run's splits to its names"
            if rows[0].split is not None
            else "data.val_fraction and data.test_fraction size the random split"
        )
        raise CaptioningError(f"{path} gives no usable image in split(s) {sorted(wanted)} ({how})")
    return records


class _Image(NamedTuple):
    image_id: int  # 1, 2, 3, ... in order of first row
    first_line: int
    split: str | None
    captions: tuple[str, ...]  # those with words


def _group(
    rows: Sequence[_Row], path: Path, known_splits: Collection[str] | None
) -> dict[str, _Image]:
    """The file's images (normalised path -> image), with their split and captions checked."""
    keys = [os.path.normpath(row.image) for row in rows]
    first: dict[str, _Row] = {}
    captions: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    duplicates = []
    for key, row in zip(keys, rows, strict=True):
        first.setdefault(key, row)
        captions.setdefault(key, [])
        if (key, row.caption) in seen:
            duplicates.append(row.line)
        elif has_words(row.caption):
            captions[key].append(row.caption)
        seen.add((key, row.caption))
    if duplicates:
        log.warning(
            "%s: counted once %d rows repeating an earlier row's image and caption, at lines %s",
            path,
            len(duplicates),
            few(duplicates, 3),
        )
    if rows[0].split is not None:
        strays = [r for r in rows if known_splits is not None and r.split not in known_splits]
        if strays:
            unknown, names = [r.line for r in strays], sorted({str(r.split) for r in strays})
            raise CaptioningError(
                f"{path}: lines {few(unknown)} name splits {names[:5]} that data.splits does not "
                f"list (it has {sorted(known_splits or ())}); map them, e.g. "
                "data.splits.val=[dev], or fix the rows"
            )
        conflicts = [r.line for k, r in zip(keys, rows, strict=True) if r.split != first[k].split]
        if conflicts:
            raise CaptioningError(
                f"{path}: lines {few(conflicts)} give their image a split other than its first "
                "row's; give all rows of an image the same split"
            )
    return {
        key: _Image(k + 1, row.line, row.split, tuple(captions[key]))
        for k, (key, row) in enumerate(first.items())
    }
