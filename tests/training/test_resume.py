"""Resuming a run (captioning.training.resume): the run's own config with only resumable keys
changed, and refusing a checkpoint that does not fit the run."""

from __future__ import annotations

import os

import pytest
from helpers import (
    assert_one_line_error,
    evil_checkpoint,
    fit,
    robust_cfg,
    run_tool,
    small_cfg,
)
from helpers import tiny_cfg as tiny_cfg_full
from omegaconf import OmegaConf

from captioning.checkpoint import save_checkpoint
from captioning.errors import CaptioningError
from captioning.training import parse_config
from captioning.training.resume import RESUMABLE, load_resume, resume_source, resumed_config

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


def _saved(shapes_root):
    return parse_config(
        tiny_cfg_full(
            shapes_root, "decoder=attention", "decoder.attention_dim=8", "trainer.epochs=3"
        )
    ).to_dict()


def test_resumed_config_is_the_runs_own_with_only_resumable_overrides(shapes_root):
    saved = _saved(shapes_root)
    given = OmegaConf.to_container(  # an LSTM, the user's epochs and progress bar
        tiny_cfg_full(
            shapes_root,
            "decoder=lstm",
            "trainer.epochs=5",
            "trainer.progress=true",
            "trainer.resume=R",
        )
    )
    merged = resumed_config(saved, given, ["trainer.epochs", "trainer.progress"], "R")
    assert merged["decoder"] == saved["decoder"]  # the attention decoder, not the default LSTM
    assert merged["trainer"]["epochs"] == 5 and merged["trainer"]["progress"] is True
    assert merged["trainer"]["resume"] == "R" and merged["trainer"]["init_from"] is None
    assert parse_config(merged).decoder.to_dict() == saved["decoder"]
    assert {"trainer.epochs", "trainer.device", "data.root"} <= set(RESUMABLE)


def test_resumed_config_refuses_a_changed_model_in_one_line_naming_the_keys(shapes_root):
    saved = _saved(shapes_root)
    given = OmegaConf.to_container(
        tiny_cfg_full(shapes_root, "decoder.hidden_dim=64", "optim.lr=0.1")
    )
    with pytest.raises(CaptioningError) as caught:
        resumed_config(saved, given, ["decoder.hidden_dim", "optim.lr", "trainer.epochs"], "R")
    message = str(caught.value)
    assert "decoder.hidden_dim (32 in the run, 64 given)" in message and "optim.lr" in message
    assert "trainer.epochs" not in message.split("only")[0]  # it may change
    assert "start a new run" in message and "trainer.init_from=R" in message
    assert "\n" not in message
    # a group choice touches its whole section: decoder=lstm on an attention run
    lstm = OmegaConf.to_container(tiny_cfg_full(shapes_root, "decoder=lstm"))
    with pytest.raises(CaptioningError, match=r"decoder\._target_"):
        resumed_config(saved, lstm, ["decoder"], "R")


def test_resumed_config_accepts_overrides_that_repeat_the_runs_values(shapes_root):
    """Re-typing the original command with trainer.resume added is not an error, and a group
    that sets keys anywhere (experiment=..., touched "") only changes the resumable ones."""
    saved = _saved(shapes_root)
    again = tiny_cfg_full(
        shapes_root, "decoder=attention", "decoder.attention_dim=8", "trainer.epochs=3"
    )
    given = OmegaConf.to_container(again)
    merged = resumed_config(saved, given, ["decoder", "decoder.attention_dim", ""], "R")
    assert merged["decoder"] == saved["decoder"] and merged["trainer"]["epochs"] == 3
    older = {**saved, "trainer": {k: v for k, v in saved["trainer"].items() if k != "threads"}}
    merged = resumed_config(older, given, [], "R")  # a key the old checkpoint lacks: filled
    assert "threads" in merged["trainer"] and parse_config(merged).trainer.threads is None
