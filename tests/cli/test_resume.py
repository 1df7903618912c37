"""``captioning-train trainer.resume=RUN`` (captioning.cli.resume): the run's own config, only
resumable keys overridden, the same folder; the command a stopped run prints."""

from __future__ import annotations

import sys

import pytest
from helpers import ROOT, SMALL, TINY, assert_one_line_error, compose_train, fit, run_tool
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict, read_write

from captioning.checkpoint import load_checkpoint
from captioning.cli import resume as cli_resume
from captioning.training.run_log import read_metrics_csv

# an attention run of seconds (TINY + SMALL), one epoch
ATTENTION = [*TINY, *SMALL, "decoder=attention", "decoder.attention_dim=8", "trainer.epochs=1"]


@pytest.fixture
def attention_run(shapes_root, tmp_path):
    """A finished one-epoch attention run, trained through the command line."""
    run = tmp_path / "run"
    out = run_tool(
        "train.py", f"data.root={shapes_root}", *ATTENTION, f"hydra.run.dir={run}", timeout=300
    )
    assert out.returncode == 0, out.stderr
    return run


@pytest.mark.slow
def test_resume_continues_the_run_with_its_own_config_in_its_folder(attention_run, tmp_path):
    """``trainer.resume=RUN trainer.epochs=2`` alone: the attention decoder (not the default
    LSTM), the same folder (log appended, metrics continued), no new outputs/DATE/TIME."""
    run, cwd = attention_run, tmp_path / "elsewhere"
    cwd.mkdir()
    first_log = (run / "train.log").read_text()
    out = run_tool("train.py", f"trainer.resume={run}", "trainer.epochs=2", cwd=cwd, timeout=300)
    assert out.returncode == 0, out.stderr
    assert list(cwd.iterdir()) == []  # no outputs/ folder
    assert [r["epoch"] for r in read_metrics_csv(run / "metrics.csv")] == [1, 2]
    log = (run / "train.log").read_text()
    assert log.startswith(first_log) and "epoch 2:" in log and "continuing with the run's" in log
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["config"]["trainer"]["epochs"] == 2
    assert ckpt["config"]["decoder"]["_target_"].endswith("AttentionDecoder")
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")  # the run's record is kept
    assert saved.decoder._target_.endswith("AttentionDecoder") and saved.trainer.resume is None


def test_resume_refuses_an_override_of_the_model_in_one_line(shapes_root, tmp_path):
    run, cwd = tmp_path / "run", tmp_path / "elsewhere"
    cwd.mkdir()
    fit(compose_train(f"data.root={shapes_root}", *ATTENTION), run_dir=run)
    out = run_tool("train.py", f"trainer.resume={run}", "decoder.hidden_dim=64", cwd=cwd)
    line = assert_one_line_error(out, "decoder.hidden_dim (32 in the run, 64 given)")
    assert "start a new run" in line and f"trainer.init_from={run}" in line
    assert list(cwd.iterdir()) == []  # no folder left behind


@pytest.mark.slow
def test_resume_refuses_a_group_choice_another_folder_and_a_folder_that_is_no_run(
    shapes_root, tmp_path
):
    run, cwd = tmp_path / "run", tmp_path / "elsewhere"
    cwd.mkdir()
    fit(compose_train(f"data.root={shapes_root}", *ATTENTION), run_dir=run)
    out = run_tool("train.py", f"trainer.resume={run}", "decoder=lstm", cwd=cwd)
    assert_one_line_error(out, "decoder._target_")
    out = run_tool("train.py", f"trainer.resume={run}", f"hydra.run.dir={tmp_path / 'b'}", cwd=cwd)
    assert_one_line_error(out, "hydra.run.dir=", "continues in the run's own folder")
    out = run_tool("train.py", f"trainer.resume={tmp_path}", cwd=cwd)  # not a run
    assert_one_line_error(out, "no checkpoints/last.pt and no .hydra/config.yaml")
    assert list(cwd.iterdir()) == [] and not (tmp_path / "b").exists()  # no folder left behind


@pytest.mark.slow
def test_resume_of_a_run_without_a_checkpoint_starts_it_again_in_its_folder(shapes_root, tmp_path):
    """A run stopped while building its feature cache has no last.pt yet: trainer.resume=RUN
    starts it again from its .hydra/config.yaml, in its folder."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        compose_train(f"data.root={shapes_root}", *ATTENTION), run / ".hydra" / "config.yaml"
    )
    out = run_tool("train.py", f"trainer.resume={run}", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["config"]["decoder"]["_target_"].endswith("AttentionDecoder")
    assert "starting again with the run's own config" in (run / "train.log").read_text()


def test_resume_command_is_spelt_as_the_run_was_started(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for argv0, program in [
        ("tools/train.py", "python tools/train.py"),
        ("/usr/bin/captioning-train", "captioning-train"),
        (cli_resume.__file__.replace("resume.py", "train.py"), "python -m captioning.cli.train"),
        ("-c", "python -m captioning.cli.train"),
    ]:
        monkeypatch.setattr(sys, "argv", [argv0, "decoder=gru"])
        assert cli_resume.resume_command("out/my run") == f"{program} 'trainer.resume=out/my run'"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setattr(sys, "argv", ["tools/train.py"])
    assert (
        cli_resume.resume_command("r")
        == "torchrun --nproc_per_node=4 tools/train.py trainer.resume=r"
    )


@pytest.mark.parametrize(
    ("phase", "saved"),
    [
        ("training", "every finished training batch"),
        ("validation", "its validation runs again"),
        ("end of epoch", "the epoch is complete in checkpoints/last.pt"),
        ("test", "the test split is scored again"),
        ("feature cache", "the feature cache keeps the images encoded so far"),
    ],
)
def test_interrupted_message_names_the_phase_what_is_saved_and_the_command(phase, saved):
    summary = {"interrupted": "SIGINT", "phase": phase, "run_dir": "outputs/r"}
    line = cli_resume.interrupted_message(summary, "python tools/train.py trainer.resume=outputs/r")
    assert line.startswith(f"interrupted (SIGINT) during {phase}: ") and saved in line
    assert line.endswith("continue with: python tools/train.py trainer.resume=outputs/r")


def test_touched_names_keys_sections_and_everything_for_a_global_group():
    """What the command line overrode: a key, a group's section, or all of the config for a
    group that sets keys anywhere (experiment=...)."""
    overrides = ["experiment=sat_vgg16", "trainer.epochs=3", "decoder=gru", "seed=2"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        config = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    task = config.copy()
    with read_write(task), open_dict(task):
        del task["hydra"]
    assert cli_resume._touched(config, task) == ["", "trainer.epochs", "decoder", "seed"]
