"""Run state and exact resume (captioning.training.state): epoch boundaries, mid-epoch, workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import fit, small_cfg

from captioning.checkpoint import load_checkpoint
from captioning.training.run_log import read_metrics_csv

tiny_cfg = small_cfg


def weights(run: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / name)["model"]


# -- exact resume -------------------------------------------------------------------------------------


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_at_an_epoch_boundary_is_exact(shapes_root, tmp_path):
    # a 1-epoch run continued to 2 epochs equals a 2-epoch run only with a schedule that does not
    # depend on the total (cosine decays to zero at trainer.epochs): the mid-epoch test covers cosine
    const = "optim.schedule=none"
    full = fit(tiny_cfg(shapes_root, "trainer.epochs=2", const), run_dir=tmp_path / "full")
    run = tmp_path / "parts"
    fit(tiny_cfg(shapes_root, "trainer.epochs=1", const), run_dir=run)
    resumed = fit(
        tiny_cfg(shapes_root, "trainer.epochs=2", f"trainer.resume={run}", const),
        run_dir=tmp_path / "ignored",
    )
    assert resumed["run_dir"] == str(run)  # continues in the resumed run's directory
    assert_same_weights(weights(tmp_path / "full"), weights(run))
    rows, expected = (
        read_metrics_csv(run / "metrics.csv"),
        read_metrics_csv(tmp_path / "full" / "metrics.csv"),
    )
    assert [r["epoch"] for r in rows] == [1, 2]  # metrics.csv continued
    for a, b in zip(rows, expected, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_Bleu_4"] == b["val_Bleu_4"]
    assert resumed["best"] == full["best"]


def _interrupt_and_resume(shapes_root, tmp_path, args, stop_at):
    """An uninterrupted run, and the same run stopped before batch `stop_at` = (epoch, batch)
    and resumed; returns the stopped run's last.pt and both runs' metrics rows."""
    fit(tiny_cfg(shapes_root, *args), run_dir=tmp_path / "full")
    run = tmp_path / "parts"
    stopped = fit(
        tiny_cfg(shapes_root, *args),
        run_dir=run,
        should_stop=lambda epoch, batch: (epoch, batch) == stop_at,
    )
    assert stopped["interrupted"] == "stop requested"
    assert len(stopped["history"]) == stop_at[0] - 1
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    fit(tiny_cfg(shapes_root, *args, f"trainer.resume={run}"))
    assert_same_weights(weights(tmp_path / "full"), weights(run))
    rows = read_metrics_csv(run / "metrics.csv")
    expected = read_metrics_csv(tmp_path / "full" / "metrics.csv")
    for a, b in zip(rows, expected, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)
        assert a["lr"] == b["lr"]
    return ckpt, rows, expected


def test_resume_mid_epoch_is_exact_with_schedules_sampling_and_dropout(shapes_root, tmp_path):
    args = (
        "trainer.epochs=2",
        "optim.schedule=cosine",
        "optim.warmup_steps=2",
        "objective.label_smoothing=0.1",
        "objective.scheduled_sampling.start_epoch=1",
        "objective.scheduled_sampling.increase_prob=0.3",
        "decoder.dropout=0.3",
    )
    ckpt, rows, expected = _interrupt_and_resume(shapes_root, tmp_path, args, (2, 1))
    assert ckpt["epoch"] == 1 and ckpt["trainer_state"]["batch"] == 1 and ckpt["step"] == 4
    assert [r["step"] for r in rows] == [r["step"] for r in expected] == [3, 6]


@pytest.mark.slow
def test_resume_mid_epoch_is_exact_with_loader_workers_and_augmentation(shapes_root, tmp_path):
    args = ("trainer.epochs=2", "trainer.num_workers=2", "data.augment=true", "decoder.dropout=0.3")
    ckpt, _, _ = _interrupt_and_resume(shapes_root, tmp_path, args, (2, 2))
    assert ckpt["trainer_state"]["batch"] == 2 and ckpt["sampler"]["epoch"] == 2
    assert ckpt["loader_generator"] is not None


def test_resume_mid_epoch_is_exact_with_the_attention_losses_logged_apart(shapes_root, tmp_path):
    """An attention decoder: metrics.csv holds the cross-entropy per word (``train_xe``) and the
    regulariser per word (``train_attention_penalty``) beside their sum, ``train_loss``; the
    partial sums of an interrupted epoch carry them through a resume."""
    args = ("trainer.epochs=1", "decoder=attention", "decoder.embed_dim=8", "decoder.hidden_dim=8")
    args += ("decoder.alpha_c=1.0",)  # the regulariser on (the demo's default is off)
    ckpt, rows, expected = _interrupt_and_resume(shapes_root, tmp_path, args, (1, 2))
    assert set(ckpt["trainer_state"]["partial"]["log_sums"]) == {"xe", "attention_penalty"}
    for a, b in zip(rows, expected, strict=True):
        for key in ("train_xe", "train_attention_penalty"):
            assert a[key] == pytest.approx(b[key], rel=1e-12)
        assert b["train_xe"] + b["train_attention_penalty"] == pytest.approx(b["train_loss"])
        assert b["train_attention_penalty"] > 0 and 0 < b["train_xe"] < b["train_loss"]
