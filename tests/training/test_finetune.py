"""Tests for captioning.training.finetune."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import fit, small_cfg

from captioning.checkpoint import load_checkpoint
from captioning.errors import CaptioningError
from captioning.models.caption_model import build_model

tiny_cfg = small_cfg


def weights(run: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / name)["model"]


# -- fine-tuning --------------------------------------------------------------------------------------


def test_encoder_fine_tuning_starts_after_n_epochs(shapes_root, tmp_path):
    run = tmp_path / "run"
    args = (
        "encoder.trainable=true",
        "optim.finetune_encoder_after=1",
        "optim.encoder_lr=1e-3",
        "optim.lr=2e-3",
        "optim.schedule=none",
    )  # constant rates: the test reads them back
    fit(tiny_cfg(shapes_root, "trainer.epochs=1", *args), run_dir=run)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    torch.manual_seed(0)
    initial = build_model(ckpt["config"], vocab_size=len(ckpt["vocab"])).state_dict()
    for key, value in ckpt["model"].items():
        if key.startswith("encoder."):
            assert torch.equal(value, initial[key]), key  # frozen in epoch 1 (BN stats too)
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [2e-3, 1e-3]
    fit(tiny_cfg(shapes_root, "trainer.epochs=2", f"trainer.resume={run}", *args))
    tuned = weights(run)
    assert not torch.equal(tuned["encoder.features.0.weight"], initial["encoder.features.0.weight"])
    with pytest.raises(CaptioningError, match=r"needs encoder\.trainable=true"):
        fit(
            tiny_cfg(shapes_root, "encoder.trainable=false", "optim.finetune_encoder_after=1"),
            run_dir=tmp_path / "bad",
        )
