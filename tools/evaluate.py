"""Score captions with BLEU-1..4, METEOR, ROUGE-L and CIDEr (the official coco-caption code).

Two modes, one output format:

    python tools/evaluate.py --checkpoint CKPT [--split test]      # decode each image once, score
    python tools/evaluate.py --references ANN.json --results RES.json   # score a results file

Prints a table and writes the scores as JSON (``--out``; by default next to the results file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _common

from captioning.checkpoint import load_checkpoint
from captioning.data.loader import build_eval_loader, load_split, prepare_data
from captioning.engine import predict
from captioning.inference import Captioner
from captioning.metrics import evaluate_captions, format_table, load_references, load_results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_argument_group("mode (one of)")
    mode.add_argument("--checkpoint", "-c", help="checkpoint file or run directory to decode with")
    mode.add_argument("--references", help="COCO caption annotation file (results mode)")
    parser.add_argument("--results", help="COCO results file: read (results mode) or written "
                        "(checkpoint mode; default RUN_DIR/<split>_results.json)")
    parser.add_argument("--split", default="test", help="data split to decode (checkpoint mode)")
    parser.add_argument("--data-root", help="override the data root stored in the checkpoint")
    parser.add_argument("--max-len", type=int, default=None, help="most words per caption")
    parser.add_argument("--batch-size", type=int, default=100, help="images decoded together")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--out", help="scores JSON (default: <results>_scores.json)")
    args = parser.parse_args(argv)
    if bool(args.checkpoint) == bool(args.references):
        parser.error("give either --checkpoint or --references (with --results)")
    if args.references and not args.results:
        parser.error("--references needs --results")
    return args


def decode_split(args: argparse.Namespace) -> tuple[dict[int, list[str]], dict[int, str], Path]:
    """Checkpoint mode: caption every image of the split once; write the results file."""
    captioner = Captioner.from_checkpoint(args.checkpoint, device=args.device)
    data = dict(load_checkpoint(args.checkpoint)["config"]["data"])
    if args.data_root:
        data["root"] = args.data_root
    prepare_data(data)
    records = load_split(data, args.split)
    loader = build_eval_loader(records, captioner.transform, batch_size=args.batch_size)
    decoding = {**captioner.decoding, **({} if args.max_len is None else {"max_len": args.max_len})}
    predictions = predict(captioner.model, loader, captioner.vocab, device=captioner.device,
                          decoding=decoding, progress=sys.stderr.isatty())
    ckpt = Path(args.checkpoint)
    run_dir = ckpt if ckpt.is_dir() else ckpt.parent.parent
    results = Path(args.results) if args.results else run_dir / f"{args.split}_results.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    payload = [{"image_id": i, "caption": c} for i, c in sorted(predictions.items())]
    results.write_text(json.dumps(payload) + "\n")
    print(f"decoded {len(predictions)} images of split {args.split!r} (each once) -> {results}")
    return loader.dataset.references(), predictions, results


@_common.one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.checkpoint:
        references, predictions, results = decode_split(args)
    else:
        references = load_references(args.references)
        predictions = load_results(args.results, references)
        results = Path(args.results)
        references = {i: references[i] for i in predictions}
    report = evaluate_captions(references, predictions)
    for notice in report.notices:
        print(f"note: {notice}")
    scores = {**report.scores, "num_images": report.num_images, "tokenizer": report.tokenizer}
    out = Path(args.out) if args.out else results.with_name(results.stem + "_scores.json")
    out.write_text(json.dumps(scores, indent=2) + "\n")
    print(format_table(report.scores))
    print(f"images scored: {report.num_images}; scores written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
