"""What a run records after each epoch: the metrics row (:func:`epoch_row`) written to
``metrics.csv`` and TensorBoard (:class:`RunLog`, read back with :func:`read_metrics_csv`), and
the epoch's log line (:func:`log_epoch`)."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

from captioning.io import write_text_atomic
from captioning.training.epoch_stats import EpochStats

__all__ = ["RunLog", "epoch_row", "log_epoch", "read_metrics_csv"]

log = logging.getLogger(__name__)
#: the epoch line is the trainer's (``captioning.training.trainer``), as users filter it
_trainer_log = logging.getLogger("captioning.training.trainer")


def epoch_row(
    epoch: int, step: int, stats: EpochStats, scores: Mapping[str, float], lr: float
) -> dict[str, float]:
    """One ``metrics.csv`` row: training loss and the objective's logs (``train_*``), time,
    learning rate and the validation scores (``val_*``)."""
    return {
        "epoch": epoch,
        "step": step,
        "train_loss": stats.loss,
        **{f"train_{k}": v for k, v in stats.extra.items()},
        "epoch_seconds": stats.seconds,
        "lr": lr,
        **{f"val_{k}": v for k, v in scores.items()},
    }


def log_epoch(
    row: Mapping[str, float], stats: EpochStats, monitor: str, unit: str, improved: bool
) -> None:
    """The epoch's log line: loss and logs, speed, the monitored score, faults survived."""
    faults = stats.faults()
    cider = "" if monitor == "CIDEr" else f", CIDEr {row.get('val_CIDEr', float('nan')):.3f}"
    _trainer_log.info(
        "epoch %d: loss %.3f%s (%.0f s, %.0f %ss/s) | val %s %.4f%s%s%s",
        row["epoch"],
        stats.loss,
        "".join(f", {k} {v:.3f}" for k, v in stats.extra.items()),
        stats.seconds,
        stats.words / max(stats.seconds, 1e-9),
        unit,
        monitor,
        row[f"val_{monitor}"],
        cider,
        " (best)" if improved else "",
        f" | {', '.join(faults)}" if faults else "",
    )


class RunLog:
    """Writes ``metrics.csv`` and TensorBoard event files under a run directory.

    Args:
        run_dir: the run's output folder.
        tensorboard: also write TensorBoard scalars to ``run_dir/tensorboard``.
        resume: keep an existing ``metrics.csv`` (rows up to ``resume_epoch`` are kept).
        resume_epoch: the last epoch whose rows stay when resuming.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        tensorboard: bool = True,
        resume: bool = False,
        resume_epoch: int = 0,
    ) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: list[dict[str, float]] = []
        if resume and self.path.exists():
            self.rows = [r for r in read_metrics_csv(self.path) if r["epoch"] <= resume_epoch]
        self._write()
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(
                    str(Path(run_dir) / "tensorboard"),
                    purge_step=resume_epoch + 1 if resume else None,
                )
            except ImportError:  # tensorboard is a dependency, but keep training without it
                log.warning("tensorboard is not installed: curves go to metrics.csv only")

    def log_epoch(self, row: Mapping[str, float]) -> None:
        """Record one epoch (``row`` needs an ``epoch`` key)."""
        row = {k: int(v) if k == "epoch" else float(v) for k, v in row.items()}
        self.rows.append(row)
        self._write()
        if self.writer is not None:
            epoch = int(row["epoch"])
            for key, value in row.items():
                if key != "epoch" and math.isfinite(value):
                    self.writer.add_scalar(key.replace("_", "/", 1), value, epoch)
            self.writer.flush()

    def _write(self) -> None:
        fields: list[str] = []
        for row in self.rows:
            fields += [k for k in row if k not in fields]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fields or ["epoch"])
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, text.getvalue())

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as floats (``epoch`` as int); empty cells are skipped."""
    with Path(path).open(newline="") as f:
        rows = [
            {k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)
        ]
    for r in rows:
        r["epoch"] = int(r["epoch"])
    return rows
