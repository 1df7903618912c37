"""Training curves (captioning.visualize.curves)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import metrics_run_dir
from PIL import Image

from captioning.errors import CaptioningError
from captioning.visualize import plot_training_curves

# --------------------------------------------------------------------------- curves


def test_training_curves_plot_every_metric_per_epoch(tmp_path: Path) -> None:
    from captioning.training.run_log import read_metrics_csv
    from captioning.visualize import training_curves_figure

    rows = read_metrics_csv(metrics_run_dir(tmp_path) / "metrics.csv")
    fig = training_curves_figure(rows, title="run")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["train loss", "validation", "validation CIDEr"]
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    assert set(lines) == {"train_loss", "Bleu_1", "Bleu_4", "CIDEr"}
    for label, key in (
        ("train_loss", "train_loss"),
        ("Bleu_4", "val_Bleu_4"),
        ("CIDEr", "val_CIDEr"),
    ):
        xs, ys = lines[label].get_data()
        assert list(xs) == [1, 2, 3, 4] and list(ys) == pytest.approx([r[key] for r in rows])
    out = plot_training_curves(rows, tmp_path / "c.png", title="run")
    with Image.open(out) as png:
        assert png.size[0] > 2 * png.size[1]  # three panels side by side
    loss_only = training_curves_figure([{"epoch": 1, "train_loss": 2.0}])
    assert [ax.get_title() for ax in loss_only.axes] == ["train loss"]
    with pytest.raises(CaptioningError, match="no epochs"):
        plot_training_curves([], tmp_path / "none.png")
