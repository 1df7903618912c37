"""Shared bits of the command-line tools: one-line error reporting, and the options of the tools
that load a trained model."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from captioning.data.images import MAX_PIXELS
from captioning.errors import CaptioningError

__all__ = ["add_captioner_arguments", "one_line_errors"]


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


def add_captioner_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every tool that loads a trained model: --checkpoint, --device and
    --max-pixels (what :meth:`captioning.Captioner.from_checkpoint` takes)."""
    parser.add_argument(
        "--checkpoint",
        "-c",
        required=True,
        help="checkpoint file (…/checkpoints/best.pt) or a run directory",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help=f"refuse images larger than this many pixels (default {MAX_PIXELS}; 0: no limit)",
    )
