"""Write the shapes data's region features (one region per object) in the per-image layout.

Usage (from the repo root)::

    python tools/extract_shapes_regions.py --root data/shapes

writes ``data/shapes/regions/{att,fc,box}/<image_id>.*`` (what ``experiment=shapes_updown``
reads, and writes itself on first use). How the features are made:
:mod:`captioning.data.shapes_regions`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from captioning.cli.common import CommandParser, one_line_errors
from captioning.data.shapes_regions import extract_shapes_regions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/shapes", help="the shapes data (data/shapes)")
    parser.add_argument("--out", help="output folder (ROOT/regions): writes att/, fc/, box/")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out) if args.out else Path(args.root) / "regions"
    wrote = extract_shapes_regions(
        args.root, out / "att", out / "fc", out / "box", progress=not args.no_progress
    )
    print(f"region features {'written to' if wrote else 'up to date in'} {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
