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
    """``python -m benchmarks images --quick``: reduced-size decoding per input, and items from
    the in-memory image cache against decoding again."""
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
    # data.image_cache after its first epoch: the same tensors, from memory, faster
    memory = json.loads((tmp_path / "images.json").read_text())["memory_rows"]
    assert [r["source"].split()[0] for r in memory] == ["shapes", "640x480", "640x480"]
    assert all(r["identical"] and r["speedup"] > 1.0 for r in memory), memory
    assert [r["kb_per_image"] for r in memory] == [12.0, 12.0, 147.0]


@pytest.mark.slow  # VGG-16 and ResNet-50 forwards at 224 px beside 2048^3 GEMMs: about 30 s
def test_encoders_benchmark_counts_torchvisions_flops():
    """``python -m benchmarks encoders --quick``: one row per encoder, its FLOPs twice the
    multiply-adds torchvision's weights metadata gives (``_ops``, GMACs)."""
    from torchvision.models import ResNet50_Weights, VGG16_Weights

    from benchmarks.encoders import run

    rows = {r["encoder"].split(" ")[0]: r for r in run(quick=True)["rows"]}
    assert set(rows) == {"VGG-16", "ResNet-50"}
    for name, weights in (("VGG-16", VGG16_Weights), ("ResNet-50", ResNet50_Weights)):
        macs = weights.DEFAULT.meta["_ops"]
        assert rows[name]["GFLOP/image"] == pytest.approx(2 * macs, rel=0.01)
        assert rows[name]["images/s"] > 0 and 0 < rows[name]["ratio to GEMM"] < 10


@pytest.mark.slow  # a ViT-B/16 forward at 224 px
def test_encoders_benchmark_counts_vits_fused_attention():
    """The FLOP counter sees through ViT's fused attention (fast path, CPU kernel): ViT-B/16
    counts twice the multiply-adds torchvision's metadata gives."""
    from torchvision.models import ViT_B_16_Weights

    from benchmarks.encoders import forward_flops
    from captioning.models.backbone import backbone

    encoder = backbone(arch="vit_b_16").eval()
    macs = ViT_B_16_Weights.DEFAULT.meta["_ops"]
    assert forward_flops(encoder, 224) / 1e9 == pytest.approx(2 * macs, rel=0.01)
