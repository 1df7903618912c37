"""Plot a training run's curves: ``python tools/plot_run.py RUN_DIR [--out curves.png]``.

Reads RUN_DIR/metrics.csv (one row per epoch, written by tools/train.py) and draws the train loss
and the validation metrics per epoch to a PNG (default RUN_DIR/curves.png).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captioning.cli.common import one_line_errors
from captioning.errors import CaptioningError
from captioning.training.run_log import read_metrics_csv
from captioning.visualize.curves import plot_training_curves


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run directory holding metrics.csv (or the CSV itself)")
    parser.add_argument("--out", "-o", help="image to write (default RUN_DIR/curves.png)")
    return parser.parse_args(argv)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = Path(args.run_dir)
    csv = given if given.suffix == ".csv" else given / "metrics.csv"
    if not csv.is_file():
        raise CaptioningError(f"{csv} not found; pass a run directory written by tools/train.py")
    try:
        rows = read_metrics_csv(csv)
    except (ValueError, KeyError) as exc:
        raise CaptioningError(f"{csv} is not a metrics.csv from tools/train.py ({exc})") from exc
    out = Path(args.out) if args.out else csv.parent / "curves.png"
    plot_training_curves(rows, out, title=str(csv.parent))
    print(f"{len(rows)} epochs plotted -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
