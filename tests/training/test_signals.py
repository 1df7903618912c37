"""SIGINT / SIGTERM at each phase of a run (captioning.training.signals and the trainer): what
finished is saved, the run says how to continue, and the resume does."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import ROOT, SMALL, TINY, fit, small_cfg

from captioning.checkpoint import load_checkpoint
from captioning.cli.resume import interrupted_message, resume_command
from captioning.distributed import DistContext
from captioning.errors import CaptioningError
from captioning.training import Trainer, run_data, run_eval
from captioning.training.loop import TrainLoop
from captioning.training.run_log import read_metrics_csv
from captioning.training.signals import Interrupted, StopOnSignal


@pytest.mark.slow
def test_sigterm_writes_a_last_checkpoint_and_the_run_resumes(shapes_root, tmp_path):
    run = tmp_path / "run"
    tool = [
        sys.executable,
        str(ROOT / "tools" / "train.py"),
        f"data.root={shapes_root}",
        *TINY,
        *SMALL,
        "trainer.max_train_batches=null",
        "trainer.batch_size=2",
        f"hydra.run.dir={run}",
    ]
    proc = subprocess.Popen(
        [*tool, "trainer.epochs=1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # during epoch 2 (or its validation)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    done = ckpt["epoch"]
    assert done >= 1 and ckpt["trainer_state"]["batch"] >= 0
    out = subprocess.run(
        [*tool, f"trainer.epochs={done + 1}", f"trainer.resume={run}"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    assert [r["epoch"] for r in read_metrics_csv(run / "metrics.csv")] == list(range(1, done + 2))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == done + 1


# -- an interrupt at each phase saves what finished (SIGTERM sent by the process to itself) ------


def _sigterm_on_call(monkeypatch, owner, name, call=1):
    """Patch ``owner.name`` to send this process SIGTERM on its `call`-th call, then run."""
    real, calls = getattr(owner, name), itertools.count(1)

    def sending(*args, **kwargs):
        if next(calls) == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, sending)


def _says_how_to_continue(summary, phase):
    message = interrupted_message(summary, resume_command(summary["run_dir"]))
    assert message.startswith(f"interrupted (SIGTERM) during {phase}: "), message
    assert message.endswith(f"trainer.resume={summary['run_dir']}"), message
    assert "java" not in message.lower()


def test_sigterm_in_training_saves_every_finished_batch(shapes_root, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _sigterm_on_call(monkeypatch, TrainLoop, "_backward", call=2)  # during batch 2
    summary = fit(small_cfg(shapes_root), run_dir=run)
    assert (summary["interrupted"], summary["phase"]) == ("SIGTERM", "training")
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 0 and ckpt["step"] == 2 and ckpt["trainer_state"]["batch"] == 2
    _says_how_to_continue(summary, "training")


@pytest.mark.parametrize("loading", [(), ("trainer.num_workers=1", "data.augment=true")])
def test_sigterm_in_validation_keeps_the_epoch_and_the_resume_validates_it(
    shapes_root, tmp_path, monkeypatch, loading
):
    """The validation is abandoned at once; last.pt holds all of the epoch's training batches,
    and the resumed run (which validates that epoch first) ends as an uninterrupted one (with
    loader workers and augmentation too)."""
    args = ("trainer.epochs=2", *loading)
    full = fit(small_cfg(shapes_root, *args), run_dir=tmp_path / "full")
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _sigterm_on_call(patch, run_eval, "evaluate_split", call=1)
        summary = fit(small_cfg(shapes_root, *args), run_dir=run)
    assert (summary["interrupted"], summary["phase"]) == ("SIGTERM", "validation")
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 0 and ckpt["step"] == 3 and ckpt["trainer_state"]["batch"] == 3
    assert not (run / "checkpoints" / "best.pt").exists()
    _says_how_to_continue(summary, "validation")
    resumed = fit(small_cfg(shapes_root, *args, f"trainer.resume={run}"))
    timeless = [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in full["history"]]
    assert [
        {k: v for k, v in r.items() if k != "epoch_seconds"} for r in resumed["history"]
    ] == timeless
    end, expected = (
        load_checkpoint(d / "checkpoints" / "last.pt")["model"] for d in (run, tmp_path / "full")
    )
    assert all(torch.equal(end[k], expected[k]) for k in expected)


def test_sigterm_in_test_scoring_keeps_the_trained_run_and_the_resume_scores_it(
    shapes_root, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    args = ("trainer.epochs=1", "trainer.test_after_training=true", "decoding.max_len=5")
    with monkeypatch.context() as patch:
        _sigterm_on_call(patch, run_eval, "evaluate_checkpoint")
        summary = fit(small_cfg(shapes_root, *args), run_dir=run)
    assert (summary["interrupted"], summary["phase"]) == ("SIGTERM", "test")
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert (run / "checkpoints" / "best.pt").is_file() and not (run / "test_scores.json").exists()
    _says_how_to_continue(summary, "test")
    resumed = fit(small_cfg(shapes_root, *args, f"trainer.resume={run}"))
    assert resumed["interrupted"] is None and resumed["test"]["num_images"] == 20
    assert [r["epoch"] for r in resumed["history"]] == [1] and (run / "test_scores.json").is_file()


def test_sigterm_in_the_feature_cache_build_stops_it_resumably(shapes_root, tmp_path, monkeypatch):
    run, cache = tmp_path / "run", tmp_path / "cache"
    cfg = small_cfg(
        shapes_root, "trainer.epochs=1", "encoder.trainable=false", f"data.cache_dir={cache}"
    )
    with monkeypatch.context() as patch:
        _sigterm_on_call(patch, run_data, "build_feature_cache")
        summary = fit(cfg, run_dir=run)
    assert (summary["interrupted"], summary["phase"]) == ("SIGTERM", "feature cache")
    assert not (run / "checkpoints" / "last.pt").exists()
    _says_how_to_continue(summary, "feature cache")
    again = fit(cfg, run_dir=run)  # what trainer.resume=RUN does for a run without last.pt
    assert again["interrupted"] is None and [r["epoch"] for r in again["history"]] == [1]


def test_an_error_after_a_signal_is_reported_as_the_interrupt(shapes_root):
    """A scorer subprocess that got the signal too fails; that is the interrupt, not a fault
    of Java (here: the phase runs with the flag only, as under DDP)."""
    trainer = Trainer.from_config(small_cfg(shapes_root))
    stop = StopOnSignal()
    stop.signum = signal.SIGTERM

    def tokenizer_killed():
        raise CaptioningError("PTB tokenizer output does not match its input")

    trainer.ctx = DistContext(0, 0, 2)  # two processes: no raising from the handler
    with pytest.raises(Interrupted) as caught:
        trainer._at_once(stop, "validation", tokenizer_killed)
    assert caught.value.phase == "validation" and caught.value.signum == signal.SIGTERM
    stop.signum = None
    with pytest.raises(CaptioningError, match="PTB tokenizer"):  # no signal: a real error
        trainer._at_once(stop, "validation", tokenizer_killed)


# captioning-train that touches MARKER when validation starts scoring (the PTB tokenizer's Java
# process starts right after it, where there is java)
MARKED_TRAIN = """
import sys
from pathlib import Path
from captioning.evaluation import metrics
from captioning.cli.train import main
marker, real = Path(sys.argv.pop(1)), metrics.coco_scores
def marked(*args, **kwargs):
    marker.touch()
    return real(*args, **kwargs)
metrics.coco_scores = marked
sys.exit(main())
"""


@pytest.mark.slow
def test_sigterm_to_the_process_group_during_validation_is_an_interrupt_not_a_java_fault(
    shapes_root, tmp_path
):
    """SIGTERM to the whole process group (as Ctrl-C, a batch scheduler or ``timeout`` send it)
    while validation scores: the Java tokenizer is not in that group; the run says
    "interrupted", keeps the epoch's training in last.pt, and the printed command continues."""
    run, marker = tmp_path / "run", tmp_path / "validating"
    args = [f"data.root={shapes_root}", *TINY, *SMALL, "trainer.epochs=1", f"hydra.run.dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", MARKED_TRAIN, str(marker), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not marker.exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "java" not in err.lower() and "PTB" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted (SIGTERM) during validation: "), err
    command = line.split("continue with: ")[1]
    assert command == f"python -m captioning.cli.train trainer.resume={run}"
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 0 and ckpt["trainer_state"]["batch"] == 3  # the epoch's 3 batches
    assert line in (run / "train.log").read_text()
    resumed = subprocess.run(
        [sys.executable, *command.split()[1:]],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in read_metrics_csv(run / "metrics.csv")] == [1]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3  # no batch twice
