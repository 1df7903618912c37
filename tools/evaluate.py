"""Score captions with BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE) with the official COCO code.

Two modes, one output format:

    python tools/evaluate.py --checkpoint CKPT [--split test] [--beam-size 3]   # decode, score
    python tools/evaluate.py --references ANN.json --results RES.json          # score a file

Checkpoint mode decodes every image of the split exactly once and writes the captions as a COCO
results file (``--results``; default RUN_DIR/<split>_results.json). Both modes print a table and
write the scores as JSON (``--out``; default <results>_scores.json) under the official names
(``Bleu_1``..``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr``, ``SPICE`` with ``--spice``) plus
``nltk_Bleu_1``..``nltk_Bleu_4`` and ``num_images``. ``--html report.html`` also writes a
sortable page of every image with its caption, references and per-image CIDEr / BLEU-4.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import _common

from captioning.errors import CaptioningError
from captioning.metrics import (
    ScoreReport,
    evaluate_captions,
    format_table,
    load_references,
    load_results,
)

#: decoding options: argparse destination -> keyword of captioning.decoding.generate
DECODING_OPTIONS = ("beam_size", "max_len", "length_penalty", "no_repeat_ngram_size")
TOKENIZERS = {
    "ptb": "PTB tokenizer (Stanford CoreNLP, as the official toolkit)",
    "project": "project tokenizer (java not found: scores differ slightly from the official)",
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    mode = parser.add_argument_group("mode (one of)")
    mode.add_argument("--checkpoint", "-c", help="checkpoint file or run directory to decode with")
    mode.add_argument("--references", help="COCO caption annotation file (results mode)")
    parser.add_argument(
        "--results",
        help="COCO results file: read (results mode) or written "
        "(checkpoint mode; default RUN_DIR/<split>_results.json)",
    )
    parser.add_argument("--split", default="test", help="data split to decode (checkpoint mode)")
    parser.add_argument("--data-root", help="override the data root stored in the checkpoint")
    parser.add_argument("--batch-size", type=_positive, default=100, help="images decoded together")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    decoding = parser.add_argument_group("decoding (checkpoint mode; default: the run's config)")
    decoding.add_argument("--beam-size", type=_positive, help="beam width (1: greedy)")
    decoding.add_argument("--max-len", type=_positive, help="most words per caption")
    decoding.add_argument(
        "--length-penalty", type=float, help="beam scores are divided by length ** this"
    )
    decoding.add_argument(
        "--no-repeat-ngram-size", type=int, help="forbid repeating any n-gram of this size (0: off)"
    )
    parser.add_argument(
        "--spice",
        action="store_true",
        help="also compute SPICE (needs java and the Stanford CoreNLP jars)",
    )
    parser.add_argument("--out", help="scores JSON (default: <results>_scores.json)")
    parser.add_argument(
        "--html",
        metavar="REPORT.html",
        help="write a sortable HTML page of the images, captions and scores",
    )
    parser.add_argument(
        "--images",
        metavar="DIR",
        help="results mode: folder of the images "
        "(file names from the annotation file), for thumbnails in --html",
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="debug logging (shows the Java tools' output)"
    )
    args = parser.parse_args(argv)
    if bool(args.checkpoint) == bool(args.references):
        parser.error("give either --checkpoint or --references (with --results)")
    if args.references and not args.results:
        parser.error("--references needs --results")
    given = [f"--{k.replace('_', '-')}" for k in DECODING_OPTIONS if getattr(args, k) is not None]
    if args.references and given:
        parser.error(
            f"{', '.join(given)} only apply with --checkpoint (results are already decoded)"
        )
    if args.images and not args.references:
        parser.error("--images is for results mode; checkpoint mode knows its image files")
    return args


def decoding_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The decoding keyword arguments the user gave on the command line (and only those)."""
    return {k: getattr(args, k) for k in DECODING_OPTIONS if getattr(args, k) is not None}


def decode_split(args: argparse.Namespace) -> tuple[dict, dict[int, str], Path, dict[int, Path]]:
    """Checkpoint mode: caption every image of the split once; write the results file.

    Returns:
        (references, predictions, results file, image files), all keyed by image id.
    """
    from captioning.checkpoint import load_checkpoint  # model code: checkpoint mode only
    from captioning.data.loader import build_eval_loader, load_split, prepare_data
    from captioning.engine import predict
    from captioning.inference import Captioner

    captioner = Captioner.from_checkpoint(args.checkpoint, device=args.device)
    data = load_checkpoint(args.checkpoint)["config"].get("data")
    if not isinstance(data, dict):
        raise CaptioningError(
            f"{args.checkpoint} records no data config; score its captions in results mode "
            "(--references ANN.json --results RES.json)"
        )
    data = dict(data)
    if args.data_root:
        data["root"] = args.data_root
    prepare_data(data)
    records = load_split(data, args.split)
    loader = build_eval_loader(records, captioner.transform, batch_size=args.batch_size)
    decoding = {**captioner.decoding, **decoding_overrides(args)}
    predictions = predict(
        captioner.model,
        loader,
        captioner.vocab,
        device=captioner.device,
        decoding=decoding,
        progress=sys.stderr.isatty(),
    )
    if not predictions:
        raise CaptioningError(
            f"none of the {len(records)} images of split {args.split!r} can be read"
        )
    ckpt = Path(args.checkpoint)
    run_dir = ckpt if ckpt.is_dir() else ckpt.parent.parent
    results = Path(args.results) if args.results else run_dir / f"{args.split}_results.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    payload = [{"image_id": i, "caption": c} for i, c in sorted(predictions.items())]
    results.write_text(json.dumps(payload) + "\n")
    how = ", ".join(f"{k}={v}" for k, v in decoding.items()) or "defaults"
    print(
        f"decoded {len(predictions)} images of split {args.split!r}, each once ({how}) -> {results}"
    )
    if len(predictions) < len(records):
        print(
            f"note: {len(records) - len(predictions)} images could not be read and are left out "
            "of scoring (named above)"
        )
    return loader.dataset.references(), predictions, results, {r.image_id: r.path for r in records}


def image_files(annotation_file: str, image_dir: str) -> dict[int, Path]:
    """Results mode: image id -> file under `image_dir`, from the annotation file's images."""
    try:
        images = json.loads(Path(annotation_file).read_text(encoding="utf-8")).get("images", [])
    except (OSError, ValueError, AttributeError) as exc:
        raise CaptioningError(
            f"cannot read image file names from {annotation_file}: {exc}"
        ) from exc
    return {
        im["id"]: Path(image_dir) / im["file_name"]
        for im in images
        if isinstance(im, dict) and "id" in im and "file_name" in im
    }


def write_report(
    args: argparse.Namespace,
    report: ScoreReport,
    references: dict,
    predictions: dict[int, str],
    images: dict[int, Path],
    notes: list[str],
) -> None:
    """Write the --html page; say how many images have no thumbnail."""
    from captioning.visualize import report_items, write_html_report

    missing = [i for i in predictions if i in images and not images[i].is_file()]
    if images and missing:
        notes.append(
            f"{len(missing)} of {len(predictions)} image files not found "
            f"(e.g. {images[missing[0]]}): no thumbnails for them"
        )
        print(f"note: {notes[-1]}")
    found = {i: p for i, p in images.items() if p.is_file()}
    items = report_items(references, predictions, report.per_image, found or None)
    title = f"{args.checkpoint} on split {args.split}" if args.checkpoint else f"{args.results}"
    scores = {**report.scores, "num_images": report.num_images}
    path = write_html_report(
        args.html, items, title=f"Captions: {title}", scores=scores, notes=notes
    )
    print(f"HTML report written to {path}")


@_common.one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # its notices are printed below, once
        logging.getLogger("captioning.metrics").setLevel(logging.ERROR)
    if args.checkpoint:
        references, predictions, results, images = decode_split(args)
    else:
        references = load_references(args.references)
        predictions = load_results(args.results, references)
        results = Path(args.results)
        images = image_files(args.references, args.images) if args.images else {}
    references = {i: references[i] for i in predictions}
    report = evaluate_captions(references, predictions, spice=args.spice, per_image=bool(args.html))
    notes = [f"tokenizer: {TOKENIZERS[report.tokenizer]}", *report.notices]
    for note in notes:
        print(note if note.startswith("tokenizer") else f"note: {note}")
    scores = {**report.scores, "num_images": report.num_images}
    out = Path(args.out) if args.out else results.with_name(results.stem + "_scores.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(scores, indent=2) + "\n")
    print(format_table(report.scores))
    print(f"images scored: {report.num_images}")
    print(f"scores written to {out}")
    if args.html:
        write_report(args, report, references, predictions, images, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
