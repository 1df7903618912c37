"""Warm starts (``trainer.init_from``): a new run from a trained model's weights, vocabulary and
model config, with a fresh optimizer; the errors."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_one_line_error, fit, run_tool, small_cfg

from captioning.checkpoint import load_checkpoint
from captioning.errors import CaptioningError
from captioning.training import parse_config
from captioning.training.warm_start import warm_start


def test_init_from_takes_weights_vocabulary_and_model_config(shapes_root, tmp_path):
    source = tmp_path / "xe"
    fit(small_cfg(shapes_root, "decoder.cell=gru", "trainer.epochs=1"), run_dir=source)
    run = tmp_path / "scst"
    cfg = small_cfg(  # an LSTM and another vocabulary configured: the checkpoint's win
        shapes_root, f"trainer.init_from={source}", "objective=scst", "data.min_count=50"
    )
    stopped = fit(cfg, run_dir=run, should_stop=lambda epoch, batch: True)  # before any step
    assert stopped["interrupted"] == "stop requested"
    best = load_checkpoint(source / "checkpoints" / "best.pt")
    start = load_checkpoint(run / "checkpoints" / "last.pt")
    assert start["config"]["decoder"] == best["config"]["decoder"]
    assert start["config"]["decoder"]["cell"] == "gru"
    assert start["vocab"] == best["vocab"]
    assert (run / "vocab.json").read_text() == (source / "vocab.json").read_text()
    for key, value in best["model"].items():
        assert torch.equal(start["model"][key], value), key
    assert start["step"] == 0 and start["optimizer"]["state"] == {}  # a fresh optimizer
    assert start["config"]["trainer"]["init_from"] == str(source)


def test_init_from_errors_are_one_line(shapes_root, tmp_path):
    cfg = parse_config(small_cfg(shapes_root, f"trainer.init_from={tmp_path / 'nope'}"))
    with pytest.raises(CaptioningError, match="no such run directory or checkpoint"):
        warm_start(cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaptioningError, match=r"no checkpoints/best\.pt"):
        warm_start(parse_config(small_cfg(shapes_root, f"trainer.init_from={tmp_path}/empty")))
    out = run_tool(
        "train.py",
        f"data.root={shapes_root}",
        f"trainer.init_from={tmp_path}",
        f"trainer.resume={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_line_error(out, "trainer.init_from", "trainer.resume")
    out = run_tool(
        "train.py",
        f"data.root={shapes_root}",
        "objective=scst",
        "objective.baseline=mean",
        "objective.num_samples=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_line_error(out, "objective.num_samples=1")
