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
    fig = training_curves_figure(rows, title="run", monitor="CIDEr")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "loss per word",
        "validation",
        "validation CIDEr",
        "learning rate",
    ]
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    assert set(lines) == {
        "train_loss",
        "val_loss",
        "Bleu_1",
        "Bleu_4",
        "CIDEr",
        "lr",
        "best epoch 2",
    }
    for label, key in (
        ("train_loss", "train_loss"),
        ("val_loss", "val_loss"),
        ("Bleu_4", "val_Bleu_4"),
        ("CIDEr", "val_CIDEr"),
        ("lr", "lr"),
    ):
        xs, ys = lines[label].get_data()
        assert list(xs) == [1, 2, 3, 4] and list(ys) == pytest.approx([r[key] for r in rows])
    assert lines["val_loss"] in fig.axes[0].get_lines()  # validation loss beside the train loss
    assert fig.axes[3].get_lines()[0] is lines["lr"]
    out = plot_training_curves(rows, tmp_path / "c.png", title="run")
    with Image.open(out) as png:
        assert png.size[0] > 3 * png.size[1]  # four panels side by side
    loss_only = training_curves_figure([{"epoch": 1, "train_loss": 2.0}])
    assert [ax.get_title() for ax in loss_only.axes] == ["loss per word"]
    assert [t.get_text() for t in loss_only.axes[0].get_legend().get_texts()] == ["train_loss"]
    with pytest.raises(CaptioningError, match="no epochs"):
        plot_training_curves([], tmp_path / "none.png")


def _best_marks(fig) -> list[float]:
    """The x of every panel's best-epoch line."""
    marks = [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == "best_epoch"]
    assert len(marks) == len(fig.axes)  # one in every panel
    return sorted({float(line.get_xdata()[0]) for line in marks})


def test_training_curves_mark_the_best_epoch_by_the_monitored_metric(tmp_path: Path) -> None:
    from captioning.training.run_log import read_metrics_csv
    from captioning.visualize import training_curves_figure
    from captioning.visualize.curves import best_epoch

    rows = read_metrics_csv(metrics_run_dir(tmp_path) / "metrics.csv")
    # CIDEr: 0.3, 0.9, 0.6, 0.9 -> epoch 2, as the trainer keeps it (a tie is no improvement)
    assert best_epoch(rows, "CIDEr") == 2 and best_epoch(rows, "Bleu_4") == 4
    assert _best_marks(training_curves_figure(rows, monitor="CIDEr")) == [2.0]
    by_bleu = training_curves_figure(rows, title="run")  # trainer.monitor's default: Bleu_4
    assert _best_marks(by_bleu) == [4.0]
    assert by_bleu.get_suptitle() == "run: best epoch 4 by validation Bleu_4 (0.2000)"
    assert best_epoch([{"epoch": 1, "train_loss": 2.0}]) is None
