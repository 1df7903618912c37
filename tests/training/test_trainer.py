"""The Trainer end to end (captioning.training.trainer): runs on each data layout, faults it
survives (non-finite losses, bad images), its settings' errors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import (
    compose_train,
    fit,
    records_with_bad_files,
    robust_cfg,
    short_run_cfg,
    tiny_model_config,
    write_karpathy,
)

from captioning.checkpoint import load_checkpoint
from captioning.errors import CaptioningError
from captioning.models.caption_model import build_model
from captioning.training import TrainLoop
from captioning.training.objectives import CrossEntropyObjective

TINY_MODEL = tiny_model_config(cell="gru", max_len=5)


def test_training_skips_unreadable_images_counted_across_workers(shapes_root, tmp_path, caplog):
    from captioning.data.datasets import CaptionDataset
    from captioning.data.loader import build_train_loader, start_epoch
    from captioning.data.transforms import eval_transform
    from captioning.vocab import Vocabulary

    records = records_with_bad_files(shapes_root, tmp_path, 3)
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, vocab_size=len(vocab))
    data = CaptionDataset(records, vocab, eval_transform(model.encoder.preprocess))
    loader = build_train_loader(data, batch_size=2, num_workers=2)  # (3 bad of 20: 2 batches hit)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start_epoch(loader, 1)
    with caplog.at_level("WARNING", logger="captioning.training.loop"):
        stats = TrainLoop(model, optimizer, device=torch.device("cpu"), max_bad_images=3).run_epoch(
            loader
        )
    assert stats.bad_images == 3 and stats.steps + stats.skipped == len(loader)
    named = [r.getMessage() for r in caplog.records if "unreadable training image" in r.message]
    assert len(named) == 3 and all(p.path.name in " ".join(named) for p in records[:3])
    start_epoch(loader, 2)
    with pytest.raises(
        CaptioningError, match=r"3 training images could not be read.*more than the 2"
    ):
        TrainLoop(model, optimizer, device=torch.device("cpu"), max_bad_images=2).run_epoch(loader)


compose_cfg = compose_train


# -- data: COCO 2014 layout and Karpathy's split file ---------------------------------------------


@pytest.mark.slow
def test_training_runs_on_karpathy_format_data(tmp_path):
    write_karpathy(tmp_path / "coco")
    cfg = compose_cfg(
        "data=coco_karpathy",
        f"data.root={tmp_path / 'coco'}",
        "data.min_count=1",
        "encoder.width=8",
        "encoder.vector_dim=16",
        "encoder.image_size=16",
        "decoder.embed_dim=8",
        "decoder.hidden_dim=16",
        "trainer.epochs=1",
        "trainer.progress=false",
        "trainer.tensorboard=false",
        "trainer.threads=1",
    )
    summary = fit(cfg, run_dir=tmp_path / "run")
    assert summary["history"][0]["val_num_images"] == 1 and summary["test"]["num_images"] == 2


def _faulty_run(shapes_root, tmp_path, monkeypatch, fault, max_nonfinite=2):
    """Train 2 epochs of 3 batches; from the 4th step on, `fault(model, loss)` is applied."""
    original, calls = CrossEntropyObjective.loss, []

    def loss(self, model, batch):
        out = original(self, model, batch)
        calls.append(1)
        if len(calls) > 3:
            out.total = fault(model, out.total)
        return out

    monkeypatch.setattr(CrossEntropyObjective, "loss", loss)
    run = tmp_path / "run"
    cfg = robust_cfg(
        shapes_root,
        "trainer.epochs=2",
        "trainer.max_train_batches=3",
        f"trainer.max_nonfinite_steps={max_nonfinite}",
    )
    with pytest.raises(CaptioningError) as info:
        fit(cfg, run_dir=run)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and last["step"] == 3
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    return str(info.value)


def test_a_run_whose_loss_stays_nan_stops_and_keeps_the_last_good_checkpoint(
    shapes_root, tmp_path, monkeypatch
):
    message = _faulty_run(shapes_root, tmp_path, monkeypatch, lambda _, loss: loss * float("nan"))
    assert "not finite for 2 consecutive steps (epoch 2, batch 2)" in message
    assert "trainer.max_nonfinite_steps=2" in message and "last.pt (epoch 1) is kept" in message


def test_a_run_whose_weights_blow_up_saves_nothing(shapes_root, tmp_path, monkeypatch):
    def poison(model, loss):  # a finite loss, but the weights are gone
        with torch.no_grad():
            model.decoder.out.weight.fill_(float("inf"))
        return loss.detach().requires_grad_()

    message = _faulty_run(shapes_root, tmp_path, monkeypatch, poison, max_nonfinite=100)
    assert "weights became non-finite in epoch 2 (decoder.out.weight)" in message
    assert "nothing was saved" in message


def test_training_run_skips_a_bad_image_up_to_the_allowed_fraction(shapes_root, tmp_path, caplog):

    root = tmp_path / "shapes"
    shutil.copytree(shapes_root, root)
    train_ann = json.loads((root / "annotations" / "captions_train.json").read_text())
    victim = root / "images" / train_ann["images"][0]["file_name"]
    victim.write_bytes(victim.read_bytes()[:64])  # truncated
    overrides = ("trainer.max_train_batches=null", "data.max_bad_image_fraction=0.01")
    with caplog.at_level("INFO"):
        summary = fit(robust_cfg(root, *overrides), run_dir=tmp_path / "ok")
    assert summary["history"] and victim.name in caplog.text
    assert "1 unreadable images skipped" in caplog.text  # the epoch's log line
    with pytest.raises(
        CaptioningError, match=r"1 training images could not be read.*more than the 0"
    ):
        fit(
            robust_cfg(root, "trainer.max_train_batches=null"),
            run_dir=tmp_path / "strict",
        )  # default 0.001 of 120 images: none allowed


# --------------------------------------------------------------------------- checkpoint mode


def test_bad_monitor_name_is_a_clear_error(shapes_root: Path, tmp_path: Path) -> None:
    cfg = short_run_cfg(shapes_root, "trainer.monitor=BLEU4", "trainer.max_train_batches=1")
    with pytest.raises(CaptioningError, match=r"trainer.monitor='BLEU4'.*Bleu_4.*CIDEr") as info:
        fit(cfg, run_dir=tmp_path)
    assert "\n" not in str(info.value)


# -- what each epoch records ---------------------------------------------------------------------


def test_metrics_csv_records_validation_loss_and_learning_rate(tiny_run: Path) -> None:
    from captioning.training.run_log import read_metrics_csv

    (row,) = read_metrics_csv(tiny_run / "metrics.csv")
    # an untrained model: about log(vocabulary size) nats per word, well above zero
    assert 0.5 < row["val_loss"] < 20 and row["lr"] > 0
