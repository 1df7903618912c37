"""Tests for captioning.training.signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT, SMALL, TINY

from captioning.checkpoint import load_checkpoint
from captioning.training.run_log import read_metrics_csv


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
