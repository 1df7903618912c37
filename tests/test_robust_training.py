"""Training faults: non-finite steps skipped (a streak stops the run, keeping the last good
checkpoint), unreadable images skipped up to a budget, degenerate batches skipped."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from helpers import (
    WORDS,
    fit,
    robust_cfg,
    tiny_model_config,
)

from captioning.checkpoint import load_checkpoint
from captioning.errors import CaptioningError
from captioning.training import NonFiniteLossError, TrainLoop
from captioning.training.objectives import CrossEntropyObjective

TINY_MODEL = tiny_model_config(cell="gru", max_len=5)


class FlakyObjective(CrossEntropyObjective):
    """Cross-entropy whose loss is NaN on the calls listed in `nan_calls` (0-based)."""

    def __init__(self, nan_calls):
        super().__init__()
        self.nan_calls, self.calls = set(nan_calls), 0

    def loss(self, model, batch):
        out = super().loss(model, batch)
        self.calls += 1
        if self.calls - 1 in self.nan_calls:
            out.total = out.total * float("nan")
        return out


def _tiny_batches(n: int):
    from captioning.data.loader import CaptionBatch
    from captioning.vocab import Vocabulary

    vocab = Vocabulary.build(WORDS)
    torch.manual_seed(0)
    batches = []
    for _ in range(n):
        captions = torch.tensor([vocab.encode(w) for w in WORDS])  # (3, T)
        batches.append(
            CaptionBatch(
                torch.randn(3, 3, 16, 16),
                captions,
                torch.full((3,), captions.shape[1]),
                torch.arange(3),
                torch.arange(3),
            )
        )
    return vocab, batches


def test_non_finite_steps_are_skipped_and_a_streak_stops_training():
    from captioning.models.caption_model import build_model

    vocab, batches = _tiny_batches(8)
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, vocab_size=len(vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    cpu = torch.device("cpu")
    flaky = FlakyObjective(nan_calls={1, 2, 5, 6, 7})
    loop = TrainLoop(model, optimizer, device=cpu, objective=flaky, max_nonfinite_steps=4)
    stats = loop.run_epoch(batches)
    assert (stats.steps, stats.nonfinite, stats.skipped, stats.nonfinite_streak) == (3, 5, 5, 3)
    assert math.isfinite(stats.loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # skipped: no update

    before = {k: v.clone() for k, v in model.named_parameters()}
    with pytest.raises(
        NonFiniteLossError, match=r"not finite for 4 consecutive steps \(epoch 2, batch 1\)"
    ):
        TrainLoop(
            model,
            optimizer,
            device=cpu,
            objective=FlakyObjective(nan_calls=range(8)),
            max_nonfinite_steps=4,
        ).run_epoch(batches, epoch=2, nonfinite_streak=stats.nonfinite_streak)
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())


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


def test_a_batch_left_with_one_image_is_skipped_not_a_batchnorm_crash():
    from captioning.models.caption_model import build_model

    vocab, batches = _tiny_batches(2)
    single = [
        b._replace(images=b.images[:1], image_index=torch.zeros(3, dtype=torch.long))
        for b in batches
    ]
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, vocab_size=len(vocab))  # vgg_tiny: BatchNorm1d in fc layers
    optimizer = torch.optim.Adam(model.parameters())
    loop = TrainLoop(model, optimizer, device=torch.device("cpu"))
    stats = loop.run_epoch([single[0], batches[1]])
    assert (stats.steps, stats.skipped, stats.nonfinite) == (1, 1, 0)
