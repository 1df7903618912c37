"""Config composition and a short end-to-end run: train (the library's Trainer) -> checkpoint ->
caption -> evaluate (the tools, through their command line)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import compose_train, fit
from helpers import tiny_cfg as _tiny_cfg
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(shapes_root: Path, *overrides: str):
    return _tiny_cfg(shapes_root, "trainer.epochs=2", "trainer.batch_size=32", *overrides)


def test_config_composes_with_overrides(shapes_root):
    cfg = tiny_cfg(shapes_root, "decoder.cell=gru", "decoding.max_len=7")
    assert cfg.decoder.cell == "gru" and cfg.decoding.max_len == 7
    assert cfg.encoder._target_ == "captioning.models.encoder.vgg_tiny"
    assert cfg.trainer.device == "auto" and cfg.data.name == "shapes"
    vgg = compose_train("encoder=vgg16", "trainer=debug")
    assert vgg.encoder._target_.endswith("vgg16") and vgg.trainer.max_train_batches == 5


@pytest.mark.slow
def test_end_to_end(shapes_root, tmp_path):
    run = tmp_path / "run"
    summary = fit(tiny_cfg(shapes_root), run_dir=run)
    assert len(summary["history"]) == 2
    for name in (
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "vocab.json",
        "metrics.csv",
        "test_scores.json",
    ):
        assert (run / name).is_file(), name
    assert summary["test"]["num_images"] == 20
    assert 0.0 <= summary["test"]["Bleu_4"] <= 1.0
    text = (run / "test_scores.json").read_text()
    written = json.loads(text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert {"shapes_precision", "shapes_recall", "CHAIR_i", "CHAIR_s"} <= set(written)

    # caption PNG and JPEG files of other sizes and modes with the checkpoint
    images = []
    for mode, suffix, size in [
        ("RGB", ".jpg", (300, 200)),
        ("L", ".png", (50, 90)),
        ("RGBA", ".png", (128, 128)),
    ]:
        path = tmp_path / f"img_{mode}{suffix}"
        Image.new(mode, size, color=128 if mode == "L" else (200, 30, 30, 255)[: len(mode)]).save(
            path
        )
        images.append(str(path))
    tool = [
        sys.executable,
        str(ROOT / "tools" / "caption.py"),
        "--checkpoint",
        str(run / "checkpoints" / "best.pt"),
    ]
    out = subprocess.run([*tool, *images], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == images
    assert all(line.split("\t")[1].strip() for line in lines)

    bad = subprocess.run([*tool, str(tmp_path / "missing.png")], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "missing.png" in bad.stderr

    # evaluate decodes each test image once and reproduces the training run's test scores
    training_results = (run / "test_results.json").read_bytes()
    ev = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "evaluate.py"),
            "--checkpoint",
            str(run),
            "--split",
            "test",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "decoded 20 images" in ev.stdout
    assert (run / "test_results.json").read_bytes() == training_results  # not overwritten
    scores = json.loads((run / "eval" / "test_greedy_results_scores.json").read_text())
    assert scores["num_images"] == 20
    assert scores["Bleu_4"] == pytest.approx(summary["test"]["Bleu_4"], abs=1e-12)
