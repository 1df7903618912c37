"""Each new data format end to end on a few generated images: a training run through ``Trainer``,
then the checkpoint captions an image and is scored by ``tools/evaluate.py`` (its command line);
and the COCO-scale start-up benchmark's quick mode."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, compose_train, fit, run_tool
from test_datasets import write_flickr, write_image

from captioning.data.splits import load_split
from captioning.training.config import parse_config

# a model and a run of seconds: 8-channel vgg_tiny at 32 px, a 16/32 LSTM, 3 batches of 4 images
RUN = [
    "encoder.width=8",
    "encoder.vector_dim=32",
    "encoder.image_size=32",
    "decoder.embed_dim=16",
    "decoder.hidden_dim=32",
    "decoding.max_len=8",
    "data.min_count=1",
    "trainer.batch_size=4",
    "trainer.max_train_batches=3",
    "trainer.epochs=1",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "trainer.threads=1",
]


def evaluate_cli(run: Path, split: str, n_images: int, ids: list[int]) -> None:
    """``tools/evaluate.py -c RUN --split SPLIT`` decodes every image once and scores it."""
    out = run.parent / f"{split}_results.json"
    done = run_tool("evaluate.py", "-c", run, "--split", split, "--results", out, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"decoded {n_images} images of split '{split}', each once" in done.stdout
    assert f"images scored: {n_images}" in done.stdout and "CIDEr" in done.stdout
    results = json.loads(out.read_text())
    assert sorted(r["image_id"] for r in results) == ids  # the data set's own ids


def caption_cli(run: Path, image: Path) -> None:
    done = run_tool("caption.py", "-c", run, image)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{image}\t")


@pytest.mark.slow
def test_flickr8k_trains_captions_and_evaluates(tmp_path):
    root = tmp_path / "flickr8k"
    write_flickr(root, {"train": 12, "val": 3, "test": 3})
    cfg = compose_train("data=flickr8k", f"data.root={root}", *RUN)
    summary = fit(cfg, run_dir=tmp_path / "run")
    assert summary["interrupted"] is None and summary["test"]["num_images"] == 3
    caption_cli(tmp_path / "run", root / "Flicker8k_Dataset" / "1000_0000.jpg")
    evaluate_cli(tmp_path / "run", "test", 3, [15, 16, 17])  # Karpathy's imgids


@pytest.mark.slow
def test_folder_csv_trains_captions_and_evaluates(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    with (root / "captions.csv").open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["image", "caption"])
        for k in range(20):
            write_image(root / "photos" / f"{k}.jpg", 12 * k)
            rows.writerow([f"photos/{k}.jpg", f"A photo of thing {k % 4}."])
            rows.writerow([f"photos/{k}.jpg", f"thing {k % 4}, seen from afar"])
    cfg = compose_train("data=folder", f"data.root={root}", *RUN)
    data = parse_config(cfg).data
    val, test = ([r.image_id for r in load_split(data, s)] for s in ("val", "test"))
    assert len(val) == len(test) == 2 and not set(val) & set(test)  # 10% of 20 images each
    summary = fit(cfg, run_dir=tmp_path / "run")
    assert summary["test"]["num_images"] == 2
    tested = json.loads((tmp_path / "run" / "test_results.json").read_text())
    assert sorted(r["image_id"] for r in tested) == sorted(test)
    caption_cli(tmp_path / "run", root / "photos" / "3.jpg")
    evaluate_cli(tmp_path / "run", "val", 2, sorted(val))


@pytest.mark.slow
def test_coco2017_trains(tmp_path):
    for split, start, count in (("train", 30, 12), ("val", 900, 3)):
        images, anns = [], []
        for k in range(count):
            name = f"{start + k:012d}.jpg"
            write_image(tmp_path / f"{split}2017" / name, 20 * k)
            images.append({"id": start + k, "file_name": name})
            anns += [
                {"id": 10 * (start + k) + j, "image_id": start + k, "caption": f"a cat {k % 3}"}
                for j in range(2)
            ]
        path = tmp_path / "annotations" / f"captions_{split}2017.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"images": images, "annotations": anns}))
    cfg = compose_train("data=coco2017", f"data.root={tmp_path}", *RUN)
    summary = fit(cfg, run_dir=tmp_path / "run")
    assert summary["test"]["num_images"] == 3  # val2017 doubles as the test split


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
