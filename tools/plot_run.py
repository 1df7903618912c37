"""Plot a training run's curves: ``python tools/plot_run.py RUN_DIR [--out curves.png]``.

Reads RUN_DIR/metrics.csv (one row per epoch, written by tools/train.py) and draws the train and
validation loss, the validation metrics and the learning rate per epoch to a PNG (default
RUN_DIR/curves.png), with the best epoch marked: the one best.pt holds, by the run's
trainer.monitor (read from RUN_DIR/.hydra/config.yaml; --monitor to choose another).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captioning.cli.common import CommandParser, one_line_errors
from captioning.errors import CaptioningError
from captioning.training.run_log import read_metrics_csv
from captioning.visualize.curves import best_epoch, plot_training_curves


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run directory holding metrics.csv (or the CSV itself)")
    parser.add_argument("--out", "-o", help="image to write (default RUN_DIR/curves.png)")
    parser.add_argument(
        "--monitor",
        help="validation metric that picks the best epoch (default: the run's trainer.monitor, "
        "else Bleu_4)",
    )
    return parser.parse_args(argv)


def run_monitor(run_dir: Path) -> str:
    """The run's ``trainer.monitor`` from its saved config (without one: Bleu_4, the default of
    conf/trainer/base.yaml)."""
    saved = run_dir / ".hydra" / "config.yaml"
    if saved.is_file():
        from omegaconf import OmegaConf

        monitor = OmegaConf.select(OmegaConf.load(saved), "trainer.monitor", default=None)
        if monitor:
            return str(monitor)
    return "Bleu_4"


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
    monitor = args.monitor or run_monitor(csv.parent)
    if rows and not any(f"val_{monitor}" in r for r in rows):
        columns = sorted(k.removeprefix("val_") for r in rows for k in r if k.startswith("val_"))
        raise CaptioningError(
            f"{csv} has no val_{monitor} column to pick the best epoch by; pass --monitor "
            f"with one of: {', '.join(dict.fromkeys(columns)) or '(none)'}"
        )
    plot_training_curves(rows, out, title=str(csv.parent), monitor=monitor)
    print(
        f"{len(rows)} epochs plotted, best epoch {best_epoch(rows, monitor)} by {monitor} -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
