"""Score captions with BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE) with the official COCO code,
and with grounded metrics (objects named right, CHAIR) where the data set has ground truth.

Two modes, one output format:

    python tools/evaluate.py --checkpoint CKPT [--split test] [--beam-size 3]   # decode, score
    python tools/evaluate.py --references ANN.json --results RES.json          # score a file

Checkpoint mode decodes every image of the split exactly once and writes the captions as a COCO
results file (``--results``; default RUN_DIR/eval/<split>_<decoding>_results.json, e.g.
``test_beam3_results.json``: never the training run's own ``test_results.json``). Both modes print
a table and write the scores as JSON (``--out``; default <results>_scores.json) under the
official names (``Bleu_1``..``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr``, ``SPICE`` with
``--spice``), ``nltk_Bleu_1``..``nltk_Bleu_4``, the grounded metrics (:mod:`captioning.evaluation.grounding`:
the shapes data's own ground truth, or COCO instances via ``data.instances`` / ``--instances``)
and ``num_images``. ``--html report.html`` also writes a sortable page of every image with its
caption (hallucinated words marked), references and per-image scores.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from captioning.cli.common import (
    CommandParser,
    add_decoding_arguments,
    decoding_overrides,
    one_line_errors,
    positive_int,
)

GROUNDING_NOTE = {
    "shapes": "shapes_* = colour+shape objects named right (precision, recall), images named "
    "exactly right, right counts, sizes, stated relations (left of, above, ...) that hold; "
    "CHAIR_i / CHAIR_s = objects named that are not in the image, per mention / per caption "
    "(lower is better)",
    "coco": "CHAIR_i / CHAIR_s = COCO objects named that are not in the image, per mention / "
    "per caption (lower is better); object_recall = objects in the image that are named",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    summary, _, details = __doc__.partition("\n\n")  # the first paragraph, whole
    parser = CommandParser(
        description=summary,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=details,
    )
    mode = parser.add_argument_group("mode (one of)")
    mode.add_argument("--checkpoint", "-c", help="checkpoint file or run directory to decode with")
    mode.add_argument("--references", help="COCO caption annotation file (results mode)")
    parser.add_argument(
        "--results",
        help="COCO results file: read (results mode) or written "
        "(checkpoint mode; default RUN_DIR/eval/<split>_<decoding>_results.json)",
    )
    parser.add_argument(
        "--split", default="test", help="data split to decode (checkpoint mode; default: test)"
    )
    parser.add_argument("--data-root", help="override the data root stored in the checkpoint")
    parser.add_argument(
        "--batch-size", type=positive_int, default=100, help="images decoded together"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    add_decoding_arguments(
        parser,
        "decoding (checkpoint mode; default: the run's config)",
        n_best=False,
        sampling=False,
    )
    parser.add_argument(
        "--instances",
        metavar="INSTANCES.json",
        help="COCO instance annotations of the images, for the object-hallucination metrics "
        "(CHAIR); checkpoint mode takes data.instances from the run, and the shapes data its own "
        "ground truth",
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
    given = [f"--{k.replace('_', '-')}" for k in decoding_overrides(args)]
    if args.references and given:
        parser.error(
            f"{', '.join(given)} only apply with --checkpoint (results are already decoded)"
        )
    if args.images and not args.references:
        parser.error("--images is for results mode; checkpoint mode knows its image files")
    return args


def decoding_tag(decoding: Any, overrides: dict[str, Any]) -> str:
    """A file-name tag for the decoding used: ``greedy``, ``beam3``, and each setting given on
    the command line (``beam3_lp0.5_maxlen16``)."""
    beam = int(decoding.beam_size)
    names = {"length_penalty": "lp", "no_repeat_ngram_size": "norepeat", "max_len": "maxlen"}
    given = [f"{short}{overrides[key]}" for key, short in names.items() if key in overrides]
    return "_".join(["greedy" if beam == 1 else f"beam{beam}", *given])


def shapes_truth(annotation_file: str) -> Any:
    """Results mode: the shapes ground truth when the references file carries it, else None."""
    from captioning.evaluation.grounding import load_shapes_truth

    try:
        images = json.loads(Path(annotation_file).read_text(encoding="utf-8")).get("images") or []
    except (OSError, ValueError, AttributeError):
        return None  # load_references reports what is wrong with the file
    has_objects = bool(images) and all(isinstance(i, dict) and "objects" in i for i in images)
    return load_shapes_truth(annotation_file) if has_objects else None


def evaluate_run(args: argparse.Namespace) -> tuple[Any, Path]:
    """Checkpoint mode: caption every image of the split once, write the results file, score.

    Returns:
        The evaluation (:class:`captioning.evaluation.Evaluation`) and the results file.
    """
    from captioning.evaluation import checkpoint_split  # model code: checkpoint mode only

    overrides = decoding_overrides(args)
    split = checkpoint_split(
        args.checkpoint,
        split=args.split,
        data_root=args.data_root,
        decoding=overrides,
        instances=args.instances,
        device=args.device,
    )
    ckpt = Path(args.checkpoint)
    run_dir = ckpt if ckpt.is_dir() else ckpt.parent.parent
    tag = decoding_tag(split.decoding, overrides)
    results = Path(args.results or run_dir / "eval" / f"{args.split}_{tag}_results.json")
    evaluation = split.evaluate(
        results=results,  # written before scoring: a scorer failure loses no decoding
        spice=args.spice,
        per_image=bool(args.html),
        batch_size=args.batch_size,
        progress=sys.stderr.isatty(),
    )
    how = ", ".join(f"{k}={v}" for k, v in split.decoding.to_dict().items()) or "defaults"
    print(
        f"decoded {len(evaluation.predictions)} images of split {args.split!r}, each once "
        f"({how}) -> {results}"
    )
    if evaluation.unreadable:
        print(
            f"note: {evaluation.unreadable} images could not be read and are left out of "
            "scoring (named above)"
        )
    return evaluation, results


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # its notices are printed below, once
        logging.getLogger("captioning.evaluation").setLevel(logging.ERROR)
    from captioning.evaluation import (
        format_table,
        image_files,
        load_references,
        load_results,
        score_captions,
        write_scores,
    )
    from captioning.evaluation.grounding import load_coco_truth
    from captioning.evaluation.html import write_scored_page

    if args.checkpoint:
        evaluation, results = evaluate_run(args)
        references, predictions, scored = (
            evaluation.references,
            evaluation.predictions,
            evaluation.scored,
        )
        images, title = evaluation.images, f"{args.checkpoint} on split {args.split}"
    else:
        references = load_references(args.references)
        predictions = load_results(args.results, references)
        results, title = Path(args.results), str(args.results)
        images = image_files(args.references, args.images) if args.images else {}
        truth = load_coco_truth(args.instances) if args.instances else None
        scored = score_captions(
            references,
            predictions,
            spice=args.spice,
            per_image=bool(args.html),
            grounding=truth or shapes_truth(args.references),
        )
    out = write_scores(args.out or results.with_name(results.stem + "_scores.json"), scored.scores)
    html = None
    if args.html:
        # rows show file names: from the references file where no --images folder is given
        names = (
            {}
            if args.checkpoint
            else {i: p.name for i, p in image_files(args.references, ".").items()}
        )
        html = write_scored_page(
            args.html, scored, references, predictions, images=images, title=title, names=names
        )
    for note in scored.notes:
        print(note if note.startswith("tokenizer") else f"note: {note}")
    print(format_table({k: v for k, v in scored.scores.items() if k != "num_images"}))
    if scored.grounding is not None:
        print(
            f"grounded metrics ({scored.grounding.kind}): {GROUNDING_NOTE[scored.grounding.kind]}"
        )
    print(f"images scored: {scored.report.num_images}")
    print(f"scores written to {out}")
    if html:
        print(f"HTML report written to {html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
