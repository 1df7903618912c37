"""The benchmarks (python -m benchmarks) and their references."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT


@pytest.mark.parametrize("benchmark", ["decoding", "decoder"])
def test_benchmark_references_compute_our_function(benchmark):
    """The benchmarks' tutorial-style references (tests/references.py) find our captions and
    compute our training loss and gradients: ``python -m benchmarks NAME --check``, run as a
    command from the repository root."""
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", benchmark, "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "DIFFERS" not in run.stdout and run.stdout.count(": ok") >= 8


@pytest.mark.slow
def test_data_benchmark_quick_mode(tmp_path):
    done = subprocess.run(  # python -m benchmarks data --quick, from the repository root
        [sys.executable, "-m", "benchmarks", "data", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "data.md").read_text()
    for phase in ("start-up", "annotations", "vocabulary", "datasets", "first batch"):
        assert f"| `coco_karpathy` | {phase} |" in table and f"| `coco` | {phase} |" in table
    result = json.loads((tmp_path / "data.json").read_text())
    assert {r["data"] for r in result["rows"]} == {"coco_karpathy", "coco"}
    assert all(r["peak_rss_gb"] > 0 for r in result["rows"])


@pytest.mark.slow
def test_images_benchmark_reports_each_input_with_its_scale_speedup_and_difference(tmp_path):
    done = subprocess.run(  # python -m benchmarks images --quick, from the repository root
        [sys.executable, "-m", "benchmarks", "images", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "images.json").read_text())["rows"]
    assert len(rows) == 18 and {r["transform"] for r in rows} == {"eval", "train"}
    for row in rows:
        reduced = row["decoded_at"] != "1/1"
        assert row["decoded_at"] == ("1/4" if row["needs"] == 64 else row["decoded_at"])
        assert row["mad_255"] < 2.0 and (row["mad_255"] > 0) == reduced
    assert "| 1/4 |" in (tmp_path / "images.md").read_text()
