"""Caption images: ``python tools/caption.py --checkpoint CKPT IMAGE [IMAGE ...]``.

IMAGE may be a file, a directory (every image file in it) or a glob pattern; images are decoded
``--batch-size`` at a time. Decoding defaults to the checkpoint's ``decoding`` config; the flags
override it (``--beam-size 5 --length-penalty 1``, ``--sample --temperature 0.8 --seed 0``).

Output, one line per caption:

* one caption per image (default): ``PATH<TAB>CAPTION``;
* ``--n-best K`` (beam search) or ``--num-samples K`` (sampling), K > 1: K lines per image,
  ``PATH<TAB>SCORE<TAB>CAPTION``, best first for beam search. SCORE is the hypothesis' beam score
  (summed log-probabilities / length ** length_penalty) or the sample's summed log-probability.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path
from typing import Any

import _common
import torch

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
    parser.add_argument(
        "--checkpoint",
        "-c",
        required=True,
        help="checkpoint file (…/checkpoints/best.pt) or a run directory",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images decoded together")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    search = parser.add_argument_group("decoding (default: the checkpoint's decoding config)")
    search.add_argument("--beam-size", type=int, help="hypotheses per image (1: greedy)")
    search.add_argument("--max-len", type=int, help="most words per caption, <end> included")
    search.add_argument(
        "--length-penalty",
        type=float,
        help="beam score = summed log-probs / length ** LENGTH_PENALTY",
    )
    search.add_argument("--n-best", type=int, help="beam hypotheses printed per image")
    search.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        help="never repeat an n-gram of this size within a caption",
    )
    search.add_argument("--sample", action="store_true", help="draw words instead of searching")
    search.add_argument("--temperature", type=float, help="sampling temperature (0: greedy)")
    search.add_argument("--top-k", type=int, help="sample among the K most likely words")
    search.add_argument("--num-samples", type=int, help="captions drawn per image")
    search.add_argument("--seed", type=int, help="random seed for --sample")
    parser.add_argument(
        "--attention-map",
        metavar="OUT.png",
        help="attention models: also draw where the model looks for each word "
        "(several images: OUT_<image name>.png each)",
    )
    return parser.parse_args(argv)


def decoding_args(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The decoding overrides the flags ask for (keyword arguments of ``generate``)."""
    flags = (
        "beam_size",
        "max_len",
        "length_penalty",
        "n_best",
        "no_repeat_ngram_size",
        "temperature",
        "top_k",
        "num_samples",
    )
    decoding = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    if args.sample:
        # a beam config in the checkpoint must not block sampling: default to one hypothesis
        decoding = {"beam_size": 1, "n_best": 1, **decoding, "sample": True}
        if args.seed is not None:
            decoding["generator"] = torch.Generator(device=device).manual_seed(args.seed)
    elif any(k in decoding for k in ("temperature", "top_k", "num_samples")):
        raise CaptioningError("--temperature, --top-k and --num-samples need --sample")
    return decoding


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
        view = model_view(load_image(path), captioner.model.encoder.preprocess)
        save_attention_map(view, words, alphas, target)
        print(f"attention map: {target}", file=sys.stderr)


@_common.one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.batch_size < 1:
        raise CaptioningError(f"--batch-size must be >= 1, got {args.batch_size}")
    paths = expand(args.images)
    captioner = Captioner.from_checkpoint(args.checkpoint, device=args.device)
    decoding = decoding_args(args, captioner.device)
    if args.attention_map and not getattr(captioner.model.decoder, "has_attention", False):
        raise CaptioningError(
            f"--attention-map needs an attention model, but {args.checkpoint} "
            "has none (train one with decoder=attention)"
        )
    vocab = captioner.vocab
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start : start + args.batch_size]
        gen = captioner.generate(chunk, **decoding)
        if args.attention_map:
            save_attention_maps(args.attention_map, chunk, gen, captioner, len(paths) > 1)
        seqs, scores = gen.sequences, gen.scores
        if seqs.dim() == 2:
            seqs, scores = seqs.unsqueeze(1), scores.unsqueeze(1)  # (B, 1, T), (B, 1)
        for path, row, row_scores in zip(chunk, seqs.tolist(), scores.tolist(), strict=True):
            if len(row) == 1:
                print(f"{path}\t{vocab.decode(row[0])}", flush=True)
                continue
            for ids, score in zip(row, row_scores, strict=True):
                print(f"{path}\t{score:.4f}\t{vocab.decode(ids)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
