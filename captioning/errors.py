"""The project's own error type: one line that says what is wrong and what to do."""

from __future__ import annotations

__all__ = ["CaptioningError", "one_line"]


class CaptioningError(Exception):
    """A user-facing error: bad input, a wrong path, an incompatible checkpoint.

    Entry points catch it and print its message on one line (no traceback).
    """


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception's message on one line, for a :class:`CaptioningError` that quotes it (Pillow,
    torch and pickle messages sometimes span several); its type's name when it has none.

    Args:
        exc: the exception.
        limit: keep at most this many characters (None: all).
    """
    text = " ".join(str(exc).split())[:limit]
    return text or type(exc).__name__
