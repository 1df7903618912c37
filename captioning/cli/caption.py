"""Caption images: ``python tools/caption.py --checkpoint CKPT IMAGE [IMAGE ...]``.

IMAGE may be a file, a directory (every image file in it; ``--recursive``: in its subfolders too)
or a glob pattern; images are decoded ``--batch-size`` at a time. Decoding defaults to the checkpoint's ``decoding`` config; the flags
override it (``--beam-size 5 --length-penalty 1``, ``--sample --temperature 0.8 --seed 0``).

Output, one line per caption:

* one caption per image (default): ``PATH<TAB>CAPTION``;
* ``--n-best K`` (beam search) or ``--num-samples K`` (sampling), K > 1: K lines per image,
  ``PATH<TAB>SCORE<TAB>CAPTION``, best first (highest SCORE; samples too, as the web page lists
  them). SCORE is the hypothesis' beam score (summed log-probabilities / length **
  length_penalty) or the sample's summed log-probability.

A model trained on pre-extracted features (``encoder=precomputed``) captions feature files
instead: ``--features ATT.npz [ATT.npz ...]`` (key ``feat``: (K, D) regions; the global feature is
``--fc-dir/<name>.npy`` when given, else the mean of the regions, as in training without
``fc_dir``). Models trained with box features need the boxes' images: evaluate those with
``tools/evaluate.py``.

Files that cannot be read as images (not an image, truncated, empty, larger than
``--max-pixels``) are reported on stderr, one ``error: cannot load image PATH: ...`` line each;
every other image is still captioned. The exit status is then 1 (``--skip-errors``: 0).
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from captioning.cli.common import (
    CommandParser,
    add_captioner_arguments,
    add_decoding_arguments,
    decoding_overrides,
    error_line,
    one_line_errors,
)
from captioning.contracts import EncoderOutput
from captioning.data.loader import stack_features
from captioning.data.regions import RegionFeatureError, RegionFeatures
from captioning.errors import CaptioningError
from captioning.inference import Captioner

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _images_in(folder: Path, recursive: bool, suffixes: set[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The files with `suffixes` (default: images) of a folder (with `recursive`, of its
    subfolders too), sorted.

    Raises:
        CaptioningError: none there; the message says what the folder holds and what to pass.
    """
    kind = "image" if suffixes == IMAGE_SUFFIXES else "feature"
    pattern = "**/*" if recursive else "*"
    found = sorted(f for f in folder.glob(pattern) if f.suffix.lower() in suffixes)
    if found:
        return found
    deeper = [f for f in folder.glob("*/**/*") if f.suffix.lower() in suffixes]
    if deeper:
        subfolders = sorted({f.relative_to(folder).parts[0] for f in deeper})
        named = ", ".join(subfolders[:3]) + (", ..." if len(subfolders) > 3 else "")
        raise CaptioningError(
            f"{folder} has no {kind} files at its top level, but {len(deeper)} in subfolders "
            f"({named}); pass a subfolder ({folder / subfolders[0]}), or add --recursive"
        )
    others = sum(1 for f in folder.iterdir() if f.is_file())
    raise CaptioningError(
        f"{folder} has no {kind} files ({others} other files; {kind} files end in "
        f"{', '.join(sorted(suffixes))}); pass such files, a folder of them or a glob"
    )


def expand(
    inputs: list[str], suffixes: set[str] = IMAGE_SUFFIXES, *, recursive: bool = False
) -> list[Path]:
    """Files, folders (their files with `suffixes`, sorted; with `recursive`, their subfolders'
    too) and glob patterns -> paths."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += _images_in(p, recursive, suffixes)
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
    parser = CommandParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files, directories or glob patterns")
    parser.add_argument(
        "--recursive", "-r", action="store_true", help="also caption the images in subfolders"
    )
    add_captioner_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=16, help="images decoded together")
    parser.add_argument(
        "--features",
        action="store_true",
        help="the inputs are region feature files <name>.npz (encoder=precomputed models)",
    )
    parser.add_argument("--fc-dir", help="with --features: folder of <name>.npy global features")
    parser.add_argument(
        "--skip-errors",
        action="store_true",
        help="exit 0 even if some files could not be read (they are still reported)",
    )
    add_decoding_arguments(parser, "decoding (default: the checkpoint's decoding config)")
    parser.add_argument(
        "--attention-map",
        metavar="OUT.png",
        help="attention models: also draw where the model looks for each word "
        "(several images: OUT_<image name>.png each)",
    )
    return parser.parse_args(argv)


def save_attention_maps(
    out: str, chunk: list[Path], gen: Any, captioner: Captioner, several: bool
) -> None:
    """--attention-map: one figure per image, over the image as the encoder saw it."""
    from captioning.data.images import load_image
    from captioning.visualize import attention_steps, model_view, save_attention_map

    base = Path(out)
    for k, path in enumerate(chunk):
        words, alphas = attention_steps(gen, captioner.vocab, k)
        target = base.with_name(f"{base.stem}_{path.stem}{base.suffix}") if several else base
        image = load_image(path, max_pixels=captioner.max_pixels)
        save_attention_map(
            model_view(image, captioner.model.encoder.preprocess), words, alphas, target
        )
        print(f"attention map: {target}", file=sys.stderr)


def readable_batches(
    captioner: Captioner, paths: list[Path], batch_size: int, failed: list[Path]
) -> Iterator[tuple[list[Path], list[torch.Tensor]]]:
    """Batches of `batch_size` readable images (paths, tensors), in order; each unreadable file
    is reported on stderr as it is met and appended to `failed`."""
    chunk: list[Path] = []
    tensors: list[torch.Tensor] = []
    for start in range(0, len(paths), batch_size):
        some = paths[start : start + batch_size]
        good, bad = captioner.preprocess_many(some)
        for _, exc in bad:
            print(error_line(exc), file=sys.stderr, flush=True)
        failed += [some[k] for k, _ in bad]
        for k, tensor in good:
            chunk.append(some[k])
            tensors.append(tensor)
            if len(chunk) == batch_size:
                yield chunk, tensors
                chunk, tensors = [], []
    if chunk:
        yield chunk, tensors


def feature_batches(
    captioner: Captioner, paths: list[Path], batch_size: int, fc_dir: str | None, failed: list
) -> Iterator[tuple[list[Path], EncoderOutput]]:
    """--features: batches of readable feature files (paths, padded features with their mask);
    each bad file is reported on stderr and appended to `failed`."""
    encoder = captioner.model.encoder
    for start in range(0, len(paths), batch_size):
        chunk, rows = [], []
        for path in paths[start : start + batch_size]:
            reader = RegionFeatures(
                path.parent, fc_dir, vector_dim=encoder.vector_dim, grid_dim=encoder.grid_dim
            )
            try:
                if path.suffix != ".npz":
                    raise RegionFeatureError(f"{path}: not a .npz region feature file")
                rows.append(reader.read(path.stem))
                chunk.append(path)
            except RegionFeatureError as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
                failed.append(path)
        if chunk:
            yield chunk, stack_features(rows)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.batch_size < 1:
        raise CaptioningError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_pixels < 0:
        raise CaptioningError(f"--max-pixels must be >= 0 (0: no limit), got {args.max_pixels}")
    paths = expand(
        args.images, {".npz"} if args.features else IMAGE_SUFFIXES, recursive=args.recursive
    )
    if args.features and args.attention_map:
        raise CaptioningError("--attention-map draws over images; it does not go with --features")
    captioner = Captioner.from_checkpoint(
        args.checkpoint, device=args.device, max_pixels=args.max_pixels or None
    )
    decoding = decoding_overrides(args)
    if args.sample and args.seed is not None:
        decoding["generator"] = torch.Generator(device=captioner.device).manual_seed(args.seed)
    if args.attention_map and not getattr(captioner.model.decoder, "has_attention", False):
        raise CaptioningError(
            f"--attention-map needs an attention model, but {args.checkpoint} "
            "has none (train one with decoder=attention)"
        )
    reads_features = getattr(captioner.model.encoder, "reads_features", False)
    if reads_features != args.features:
        raise CaptioningError(
            f"{args.checkpoint} reads pre-extracted region features (encoder=precomputed) and "
            "cannot encode an image: pass its feature files with --features ATT.npz ..., or "
            "evaluate it with tools/evaluate.py"
            if reads_features
            else "--features is for models trained on pre-extracted features "
            f"(encoder=precomputed); {args.checkpoint} reads images"
        )
    batches = (
        feature_batches(captioner, paths, args.batch_size, args.fc_dir, failed := [])
        if args.features
        else readable_batches(captioner, paths, args.batch_size, failed := [])
    )
    vocab = captioner.vocab
    for chunk, tensors in batches:
        gen = captioner.generate(tensors, **decoding).best_first()  # samples: by score too
        if args.attention_map:
            save_attention_maps(args.attention_map, chunk, gen, captioner, len(paths) > 1)
        seqs, scores = gen.sequences, gen.scores  # (B, K, T), (B, K)
        for path, row, row_scores in zip(chunk, seqs.tolist(), scores.tolist(), strict=True):
            if len(row) == 1:
                print(f"{path}\t{vocab.decode(row[0])}", flush=True)
                continue
            for ids, score in zip(row, row_scores, strict=True):
                print(f"{path}\t{score:.4f}\t{vocab.decode(ids)}", flush=True)
    if failed:
        print(
            f"{len(failed)} of {len(paths)} files could not be read as "
            f"{'features' if args.features else 'images'} and have no "
            f"caption{' (--skip-errors: exit status 0)' if args.skip_errors else ''}",
            file=sys.stderr,
        )
        return 0 if args.skip_errors else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
