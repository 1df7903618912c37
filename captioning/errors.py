"""The project's own error type: one line that says what is wrong and what to do."""

__all__ = ["CaptioningError"]


class CaptioningError(Exception):
    """A user-facing error: bad input, a wrong path, an incompatible checkpoint.

    Entry points catch it and print its message on one line (no traceback).
    """
