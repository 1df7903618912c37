"""What a run reports after each epoch: the metrics row (``metrics.csv``, TensorBoard) and the
log line."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from captioning.training.loop import EpochStats

__all__ = ["epoch_row", "log_epoch"]

log = logging.getLogger("captioning.training.trainer")


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
    log.info(
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
