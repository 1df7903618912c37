"""Image records, the one form every caption source is read into, and the checks every reader
applies to them.

COCO caption files (:mod:`captioning.data.coco`), Karpathy's split files for COCO, Flickr8k and
Flickr30k (:mod:`captioning.data.karpathy`) and a user's own CSV / JSON Lines file
(:mod:`captioning.data.folder`) all give a list of :class:`ImageRecord`, so everything
downstream (vocabulary, datasets, evaluation) has one code path. Their problems are reported the
same way: one line naming the first few offending entries, an error when ``strict`` and
otherwise skipped and counted in the log.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from captioning.errors import CaptioningError

__all__ = [
    "ImageRecord",
    "SkippedImage",
    "check_images",
    "few",
    "is_int",
    "read_json",
    "report_problems",
]

log = logging.getLogger(__name__)

#: folders holding at least this many of the records' images are listed once instead of
#: checking every file (one directory read instead of a stat per image: 0.1 s for COCO's 82,783
#: training images, and far less on network file systems)
_LIST_FROM = 64


@dataclass(frozen=True)
class ImageRecord:
    """One image and all its reference captions.

    ``image_id`` is the data set's integer id: COCO's image id (``cocoid`` in Karpathy's COCO
    file), Karpathy's ``imgid`` for Flickr8k / Flickr30k, and for a user's own file the image's
    position in it (see :mod:`captioning.data.folder`). Results files and scores use it.
    """

    image_id: int
    path: Path
    captions: tuple[str, ...]


class SkippedImage(NamedTuple):
    """A dataset item whose image could not be read; the collate functions drop and count it."""

    image_id: int
    reason: str  # the one-line ImageLoadError message, naming the file


def few(items: Sequence[object], n: int = 5) -> str:
    """The first `n` items, and how many more there are: ``[3, 7] (and 12 more)``."""
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return f"{list(items[:n])}{more}"


def is_int(value: object) -> bool:
    """An ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def read_json(path: str | os.PathLike, what: str, hint: str) -> Any:
    """Parse a JSON file; a missing or non-JSON file is a one-line CaptioningError."""
    path = Path(path)
    if not path.is_file():
        raise CaptioningError(f"{what} not found: {path} ({hint})")
    try:
        return json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise CaptioningError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            f"it should be a {what}"
        ) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise CaptioningError(f"cannot read {path} as a {what} ({exc}); {hint}") from None


def report_problems(
    source: Path, strict: bool, problems: list[tuple[str, list]], hint: str
) -> None:
    """Raise for the problems found (`strict`), or log each kind with a count and examples.

    Args:
        source: the file the problems are in (starts the message).
        strict: raise (True) or log a warning per kind of problem.
        problems: ``(what, [ids or rows])`` pairs; those with an empty list are fine.
        hint: how to fix them (the error adds ``or set data.strict=false to skip them``).
    """
    found = [(text, items) for text, items in problems if items]
    if not found:
        return
    if strict:
        listed = "; ".join(f"{len(items)} {text} {few(items, 3)}" for text, items in found)
        raise CaptioningError(f"{source}: {listed}; {hint}, or set data.strict=false to skip them")
    for text, items in found:
        log.warning("%s: skipped %d %s %s", source, len(items), text, few(items, 3))


def _missing(paths: Sequence[Path]) -> list[bool]:
    """Whether each file is missing; folders with many of the files are listed once."""
    by_folder: dict[str, list[int]] = defaultdict(list)
    names = []
    for k, path in enumerate(paths):
        folder, name = os.path.split(path)
        by_folder[folder].append(k)
        names.append(name)
    missing = [False] * len(paths)
    for folder, indices in by_folder.items():
        if len(indices) >= _LIST_FROM:
            try:
                listed = set(os.listdir(folder or "."))
            except OSError:
                listed = set()
            for k in indices:  # a name not listed may still exist (case-insensitive systems)
                missing[k] = names[k] not in listed and not paths[k].is_file()
        else:
            for k in indices:
                missing[k] = not paths[k].is_file()
    return missing


def check_images(
    records: list[ImageRecord],
    source: Path,
    strict: bool,
    *,
    name: Callable[[list[ImageRecord]], tuple[str, list]] | None = None,
    hint: str = "fix data.root / the image folder",
    splits: Sequence[str] = (),
) -> list[ImageRecord]:
    """Keep the records whose image file exists; missing files are an error when `strict`.

    Args:
        records: the records to check.
        source: the annotation file that lists them (named in the message).
        strict: missing files are an error (False: skipped, with a warning).
        name: record -> how the message names it (default: ``image ids`` and the id).
        hint: how to fix it.
        splits: the splits of `source` the records are (a file with several splits: the count
            is theirs, and the message says so); empty: the whole file.

    Returns:
        The records whose file exists.
    """
    gone = _missing([r.path for r in records])
    missing = [r for r, m in zip(records, gone, strict=True) if m]
    if not missing:
        return records
    label, ids = ("image ids", [r.image_id for r in missing]) if name is None else name(missing)
    which = f" for split{'s' if len(splits) > 1 else ''} {', '.join(splits)}" if splits else ""
    message = (
        f"{len(missing)} of {len(records)} image files listed in {source}{which} are missing, "
        f"e.g. {[str(r.path) for r in missing[:3]]} ({label} {few(ids, 3)})"
    )
    if strict:
        raise CaptioningError(f"{message}; {hint}, or set data.strict=false to skip them")
    log.warning("%s; skipped", message)
    return [r for r, m in zip(records, gone, strict=True) if not m]
