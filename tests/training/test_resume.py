"""Resuming a run (captioning.training.resume): refusing a checkpoint that does not fit the run."""

from __future__ import annotations

import os

import pytest
from helpers import assert_one_line_error, evil_checkpoint, fit, robust_cfg, run_tool, small_cfg

from captioning.checkpoint import save_checkpoint
from captioning.errors import CaptioningError
from captioning.training import parse_config
from captioning.training.resume import load_resume, resume_source

tiny_cfg = small_cfg


def test_resume_needs_the_same_model(shapes_root, tmp_path):
    with pytest.raises(CaptioningError, match="no such run directory"):
        resume_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaptioningError, match=r"no checkpoints/last\.pt"):
        resume_source(tmp_path / "empty")
    assert resume_source(None) is None
    cfg = parse_config(tiny_cfg(shapes_root)).to_dict()
    other = {**cfg, "decoder": {**cfg["decoder"], "hidden_dim": 64}}

    path = save_checkpoint(
        tmp_path / "ck.pt", model={}, config=other, vocab=["<pad>"], epoch=1, step=1
    )
    with pytest.raises(CaptioningError, match="decoder config differs"):
        load_resume(path, cfg)
    assert os.path.exists(path)


@pytest.mark.slow
def test_pickled_checkpoint_is_refused_on_resume(tmp_path):
    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.pt", marker)
    out = run_tool(
        "train.py",
        f"trainer.resume={evil}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.root={tmp_path / 'never'}",
    )
    assert_one_line_error(out, "refused to load", "evil.pt")
    assert not marker.exists() and not (tmp_path / "never").exists()


def test_resume_refuses_a_different_model_or_vocabulary(shapes_root, tmp_path):
    run = tmp_path / "run"
    fit(robust_cfg(shapes_root), run_dir=run)
    with pytest.raises(
        CaptioningError,
        match=r"decoder config differs .*decoder\.hidden_dim: 8 in the checkpoint, 16 now",
    ):
        fit(
            robust_cfg(
                shapes_root,
                "trainer.epochs=2",
                f"trainer.resume={run}",
                "decoder.hidden_dim=16",
            )
        )
    (run / "vocab.json").write_text('["<pad>", "<start>", "<end>", "<unk>", "zebra"]')
    with pytest.raises(CaptioningError, match=r"vocabulary \(\d+ words\) differs from the run's"):
        fit(robust_cfg(shapes_root, "trainer.epochs=2", f"trainer.resume={run}"))
