"""Training curves: train loss and validation metrics per epoch, from a run's ``metrics.csv``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from captioning.errors import CaptioningError

__all__ = ["plot_training_curves", "training_curves_figure"]

#: validation metrics in [0, 1], drawn together (CIDEr, on a 0..10 scale, gets its own panel)
_UNIT_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "SPICE")


def plot_training_curves(
    rows: Sequence[Mapping[str, float]], path: str | os.PathLike, *, title: str | None = None
) -> Path:
    """Draws train loss, validation BLEU/METEOR/ROUGE-L and validation CIDEr per epoch.

    Args:
        rows: one mapping per epoch with ``epoch`` and any of ``train_loss``, ``train_xe``,
            ``train_attention_penalty``, ``val_loss``,
            ``val_<metric>`` (what :func:`captioning.training.run_log.read_metrics_csv` returns).
        path: the image file to write (PNG, SVG, PDF by suffix).
        title: figure title.

    Returns:
        The path written.

    Raises:
        CaptioningError: no rows, or no ``epoch`` column.
    """
    fig = training_curves_figure(rows, title=title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def training_curves_figure(rows: Sequence[Mapping[str, float]], *, title: str | None = None) -> Any:
    """The figure of :func:`plot_training_curves`: one panel per group of curves (loss,
    validation BLEU/METEOR/ROUGE-L, validation CIDEr), each curve one line labelled by its key.

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
    # other decoders' train_loss) and the regulariser per word
    names = ("train_loss", "train_xe", "train_attention_penalty", "val_loss")
    losses = [k for k in names if k in keys]
    panels = [(" / ".join(k.replace("_", " ") for k in losses), losses)]
    panels.append(("validation", [f"val_{m}" for m in _UNIT_METRICS if f"val_{m}" in keys]))
    panels.append(("validation CIDEr", ["val_CIDEr"] if "val_CIDEr" in keys else []))
    panels = [(name, ks) for name, ks in panels if ks]
    fig = Figure(figsize=(4.2 * max(len(panels), 1), 3.4), dpi=100)
    for k, (name, ks) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for key in ks:
            epochs, values = series(key)
            ax.plot(epochs, values, marker="o", markersize=3, label=key.removeprefix("val_"))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if len(ks) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
