"""Training curves from a run's ``metrics.csv``: train and validation loss, validation metrics and
the learning rate per epoch, the best epoch (by the run's ``trainer.monitor``) marked."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from captioning.errors import CaptioningError

__all__ = ["best_epoch", "plot_training_curves", "training_curves_figure"]

#: validation metrics in [0, 1], drawn together (CIDEr, on a 0..10 scale, gets its own panel)
_UNIT_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "SPICE")
LOSS_TITLE = "loss per word"


def plot_training_curves(
    rows: Sequence[Mapping[str, float]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    monitor: str = "Bleu_4",
) -> Path:
    """Draws the losses, the validation scores and the learning rate per epoch, the best epoch
    marked (:func:`training_curves_figure`).

    Args:
        rows: one mapping per epoch with ``epoch`` and any of ``train_loss``, ``train_xe``,
            ``train_attention_penalty``, ``val_loss``, ``lr``,
            ``val_<metric>`` (what :func:`captioning.training.run_log.read_metrics_csv` returns).
        path: the image file to write (PNG, SVG, PDF by suffix).
        title: figure title.
        monitor: the validation metric the run picked its best epoch by (``trainer.monitor``;
            its default in conf/trainer/base.yaml is Bleu_4).

    Returns:
        The path written.

    Raises:
        CaptioningError: no rows, or no ``epoch`` column.
    """
    fig = training_curves_figure(rows, title=title, monitor=monitor)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def best_epoch(rows: Sequence[Mapping[str, float]], monitor: str = "Bleu_4") -> int | None:
    """The epoch the trainer keeps as ``best.pt``: the first with the highest ``val_<monitor>``
    (a later tie is no improvement); None when no row has it."""
    scored = [(r[f"val_{monitor}"], -r["epoch"]) for r in rows if f"val_{monitor}" in r]
    return -max(scored)[1] if scored else None


def training_curves_figure(
    rows: Sequence[Mapping[str, float]], *, title: str | None = None, monitor: str = "Bleu_4"
) -> Any:
    """The figure of :func:`plot_training_curves`: one panel per group of curves (train and
    validation loss, validation BLEU/METEOR/ROUGE-L, validation CIDEr, learning rate), each
    curve one line labelled by its key, and in every panel a dashed vertical line at the best
    epoch by ``val_<monitor>`` (labelled ``best epoch N``; gid ``best_epoch``).

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not rows or any("epoch" not in r for r in rows):
        raise CaptioningError(
            "no epochs to plot: metrics.csv is empty or has no 'epoch' column; "
            "plot after at least one epoch has finished"
        )

    def series(key: str) -> tuple[list[float], list[float]]:
        points = [(r["epoch"], r[key]) for r in rows if key in r]
        return [e for e, _ in points], [v for _, v in points]

    keys = {k for r in rows for k in r}
    # with an attention regulariser: the total, its cross-entropy per word (comparable with
    # other decoders' train_loss and with val_loss) and the regulariser per word
    names = ("train_loss", "train_xe", "train_attention_penalty", "val_loss")
    losses = [k for k in names if k in keys]
    panels = [(LOSS_TITLE, losses)]  # the legend names each loss
    panels.append(("validation", [f"val_{m}" for m in _UNIT_METRICS if f"val_{m}" in keys]))
    panels.append(("validation CIDEr", ["val_CIDEr"] if "val_CIDEr" in keys else []))
    panels.append(("learning rate", ["lr"] if "lr" in keys else []))
    panels = [(name, ks) for name, ks in panels if ks]
    best = best_epoch(rows, monitor)
    fig = Figure(figsize=(4.2 * max(len(panels), 1), 3.4), dpi=100)
    for k, (name, ks) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for key in ks:
            epochs, values = series(key)
            label = key if key in names else key.removeprefix("val_")  # val_loss by train_loss
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
        if best is not None:
            ax.axvline(
                best,
                color="0.35",
                linestyle="--",
                linewidth=1,
                label=f"best epoch {best}",
                gid="best_epoch",
            )
        if name == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if len(ks) > 1 or best is not None or name == LOSS_TITLE:
            ax.legend(fontsize=8)
    if best is not None:
        score = next(r[f"val_{monitor}"] for r in rows if r["epoch"] == best)
        heading = f"best epoch {best} by validation {monitor} ({score:.4f})"
        title = f"{title}: {heading}" if title else heading
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
