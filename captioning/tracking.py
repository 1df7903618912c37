"""Per-epoch training curves: one CSV row and TensorBoard scalars per epoch."""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["RunLog", "read_metrics_csv"]

log = logging.getLogger(__name__)


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
        row = {k: float(v) for k, v in row.items()}
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
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields or ["epoch"])
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)

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
