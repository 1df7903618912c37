"""Caption images: ``python tools/caption.py --checkpoint CKPT IMAGE [IMAGE ...]``.

IMAGE may be a file, a directory (every image file in it) or a glob pattern. Prints one line per
image: its path, a tab, its caption.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import _common

from captioning.errors import CaptioningError
from captioning.inference import Captioner

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def expand(inputs: list[str]) -> list[Path]:
    """Files, directories (their image files, sorted) and glob patterns -> image paths."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif any(ch in item for ch in "*?[") and not p.exists():
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            if not matches:
                raise CaptioningError(f"no file matches {item!r}")
            paths += matches
        else:
            paths.append(p)
    if not paths:
        raise CaptioningError("no images given: pass image files, a directory or a glob")
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files, directories or glob patterns")
    parser.add_argument("--checkpoint", "-c", required=True,
                        help="checkpoint file (…/checkpoints/best.pt) or a run directory")
    parser.add_argument("--max-len", type=int, default=None, help="most words per caption")
    parser.add_argument("--batch-size", type=int, default=16, help="images decoded together")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    return parser.parse_args(argv)


@_common.one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    captioner = Captioner.from_checkpoint(args.checkpoint, device=args.device)
    decoding = {} if args.max_len is None else {"max_len": args.max_len}
    paths = expand(args.images)
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start : start + args.batch_size]
        for path, caption in zip(chunk, captioner.caption(chunk, **decoding), strict=True):
            print(f"{path}\t{caption}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
