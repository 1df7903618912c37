"""Caption shapes scenes never seen in training: ``python tools/fresh_shapes.py -c RUN``.

Draws new scenes from the shapes generator's spec (a random stream the data set's splits never
use), captions them with a trained model and prints, per number of objects, how many captions
name exactly the scene's colours and shapes, with a few wrong ones. ``make demo`` runs it after
training. See :mod:`captioning.evaluation.grounding.fresh`.
"""

from __future__ import annotations

import argparse
import sys

from captioning.cli.common import (
    CommandParser,
    add_captioner_arguments,
    add_decoding_arguments,
    decoding_overrides,
    one_line_errors,
    positive_int,
)
from captioning.evaluation.grounding.fresh import FRESH_SEED, fresh_scene_accuracy
from captioning.inference import Captioner


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__.splitlines()[0])
    add_captioner_arguments(parser)
    parser.add_argument(
        "--per-count",
        type=positive_int,
        default=300,
        help="scenes with each of 1, 2 and 3 objects (default 300)",
    )
    parser.add_argument(
        "--seed", type=int, default=FRESH_SEED, help=f"the scenes' seed (default {FRESH_SEED})"
    )
    parser.add_argument(
        "--image-size", type=positive_int, default=128, help="scene side in pixels (default 128)"
    )
    add_decoding_arguments(
        parser, "decoding (default: the checkpoint's settings)", n_best=False, sampling=False
    )
    return parser.parse_args(argv)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    captioner = Captioner.from_checkpoint(
        args.checkpoint, device=args.device, max_pixels=args.max_pixels or None
    )
    overrides = decoding_overrides(args)
    result = fresh_scene_accuracy(
        lambda images: captioner.caption(list(images), **overrides),
        per_count=args.per_count,
        seed=args.seed,
        image_size=args.image_size,
    )
    print(
        f"fresh shapes scenes (seed {args.seed}): captions naming exactly their colours and shapes"
    )
    print(result.table())
    for count, wrong in sorted(result.examples.items()):
        for text, truth in wrong[:2]:
            print(f"  wrong, {count} object(s): {text!r} (the scene: {', '.join(truth)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
