"""Shared bits of the command-line tools: import path and one-line error reporting."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captioning.errors import CaptioningError


def one_line_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """Run `main`; a CaptioningError becomes ``error: ...`` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return int(main(*args, **kwargs) or 0)
        except CaptioningError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
