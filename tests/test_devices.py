"""Devices (captioning.devices): asking for a device the machine lacks."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_train, run_tool

compose_cfg = compose_train


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_gpu_asked_for_without_one_is_a_one_line_error(tmp_path):
    assert compose_cfg("trainer=gpu").trainer.device == "cuda"
    missing = tmp_path / "not_generated"
    out = run_tool(
        "train.py",
        "trainer.device=cuda",
        f"data.root={missing}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error: trainer.device=cuda") and "Traceback" not in out.stderr
    assert not missing.exists()  # failed before any work
