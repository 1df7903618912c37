"""Convert the original bottom-up attention TSV release into per-image feature files.

Usage (from the repo root)::

    python tools/convert_bottom_up_tsv.py data/bu_data/trainval/*.tsv* --out data/cocobu

writes ``data/cocobu_att/<image_id>.npz`` (key ``feat``: (K, 2048)), ``data/cocobu_fc/<id>.npy``
(the mean of the regions) and ``data/cocobu_box/<id>.npy`` (K, 4), as self-critical.pytorch's
scripts/make_bu_data.py does; train on them with ``encoder=precomputed
data.features.att_dir=... fc_dir=... box_dir=...`` (README, "Pre-extracted features").
The conversion itself: :mod:`captioning.data.bottom_up_tsv`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from captioning.cli.common import CommandParser, one_line_errors
from captioning.data.bottom_up_tsv import convert_bottom_up_tsv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__.splitlines()[0])
    parser.add_argument("tsv", nargs="+", help="the release's .tsv files (streamed in order)")
    parser.add_argument(
        "--out", required=True, help="output prefix: writes OUT_att/, OUT_fc/ and OUT_box/"
    )
    parser.add_argument("--no-fc", action="store_true", help="do not write OUT_fc/")
    parser.add_argument("--no-box", action="store_true", help="do not write OUT_box/")
    parser.add_argument(
        "--dtype", choices=("float32", "float16"), default="float32", help="(float32)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out.rstrip("/")
    count = convert_bottom_up_tsv(
        args.tsv,
        f"{out}_att",
        None if args.no_fc else f"{out}_fc",
        None if args.no_box else f"{out}_box",
        dtype=args.dtype,
        progress=not args.no_progress,
    )
    print(
        f"{count} images -> {out}_att/"
        + ("" if args.no_fc else f", {out}_fc/")
        + ("" if args.no_box else f", {out}_box/")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
