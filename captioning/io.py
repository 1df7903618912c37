"""File-system helpers every writer uses: atomic writes, the output-folder check and the lock
that keeps two processes from writing one generated data set at once.

An atomic write goes to a temporary file in the destination's folder (created with mode 0666
less the umask, as ``open()`` would create the file itself), is flushed and fsync'ed, and is
then renamed over the destination with :func:`os.replace`: a reader, or a run restarted after a
crash, sees the old file or the new one, never a half-written one. A writer that fails leaves
the old file as it was and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from captioning.errors import CaptioningError

__all__ = ["atomic_write", "check_writable", "exclusive_lock", "write_text_atomic"]


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty, hidden ``.NAME.RANDOM.tmp`` file in `folder` (mode 0666 less the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # (a name drawn twice: draw again)
            continue


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike, write: Callable[[BinaryIO], object], *, durable: bool = True
) -> Path:
    """Write a file atomically through `write`, which gets the open binary stream.

    For example ``atomic_write(path, lambda f: torch.save(payload, f))``.

    Args:
        path: the destination (its folder is created if needed).
        write: writes the whole content to the stream it is given.
        durable: fsync the file and its folder; False for many small files whose set is
            marked complete by another (durable) file once all are written: still never
            half-written under the final name, without two disk flushes per file.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (no newline translation).

    Args:
        path: the destination (its folder is created if needed).
        text: the whole content.
        encoding: the text encoding.

    Returns:
        The path written.
    """
    data = text.encode(encoding)
    return atomic_write(path, lambda f: f.write(data))


def check_writable(folder: str | os.PathLike, setting: str) -> None:
    """Create `folder` and write a probe file in it, so that an unusable output folder is one
    :class:`~captioning.errors.CaptioningError` line (naming the setting to change) before any
    long work starts.

    Args:
        folder: the output folder.
        setting: the config key (or option) that chose it, e.g. ``"data.cache_dir"``.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CaptioningError(
            f"cannot write to {folder} ({exc.strerror or type(exc).__name__}); "
            f"set {setting} to a folder you can write to"
        ) from None


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) while the block runs, waiting for a
    process that holds it: two runs started together on a data set that is not there yet then
    write it once, not both at the same time (the second finds it written). POSIX ``flock``;
    where there is none (Windows) the block runs unlocked.

    Args:
        path: the lock file.
        what: what is being written, for the message shown while waiting.
    """
    try:
        import fcntl  # (POSIX only)
    except ImportError:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.getLogger(__name__).info("waiting for another process writing %s", what)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
