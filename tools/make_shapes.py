"""Generate the synthetic shapes captioning dataset (images + COCO caption files).

Usage (from the repo root)::

    python tools/make_shapes.py --root data/shapes [--train 6000 --val 500 --test 500 --seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from captioning.cli.common import CommandParser, one_line_errors
from captioning.data.shapes import SPLITS, generate_shapes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/shapes", help="output folder (data/shapes)")
    parser.add_argument("--train", type=int, default=6000, help="training images (6000)")
    parser.add_argument("--val", type=int, default=500, help="validation images (500)")
    parser.add_argument("--test", type=int, default=500, help="test images (500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--image-size", type=int, default=128, help="image side in pixels (128)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate even if cached")
    return parser.parse_args(argv)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    root = generate_shapes(
        args.root,
        train=args.train,
        val=args.val,
        test=args.test,
        seed=args.seed,
        image_size=args.image_size,
        overwrite=args.overwrite,
    )
    elapsed = time.perf_counter() - start
    print(f"shapes dataset in {root.resolve()} ({elapsed:.1f} s)")
    for split in SPLITS:
        ann_file = root / "annotations" / f"captions_{split}.json"
        data = json.loads(ann_file.read_text(encoding="utf-8"))
        print(
            f"  {split:5s}: {len(data['images'])} images, {len(data['annotations'])} captions "
            f"-> {ann_file}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
