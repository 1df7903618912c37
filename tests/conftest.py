"""Shared fixtures (the builders they use live in ``helpers.py``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    CONFIG,
    VOCAB,
    fit,
    short_run_cfg,
    tiny_checkpoint,
    tiny_model_config,
    write_coco,
    write_json,
)
from PIL import Image

from captioning.app import DemoService, shapes_examples
from captioning.checkpoint import save_checkpoint
from captioning.inference import Captioner
from captioning.models.caption_model import build_model

torch.set_num_threads(1)  # tiny models: one thread is faster, and immune to oversubscription


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts on one torch thread (tiny tensors gain nothing from threads, and two
    spin-waiting threads on a busy 2-core machine can be 1000x slower); whatever a test sets
    (training applies ``trainer.threads``) is undone afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_coco(tmp_path: Path) -> Path:
    """A 4-image train and 2-image val split in COCO format."""
    write_coco(
        tmp_path,
        "train",
        {
            "a.jpg": ["A red circle.", "a red ball"],
            "b.jpg": ["A blue square", "blue box on gray"],
            "c.jpg": ["a green triangle", "the green triangle"],
            "d.jpg": ["A red square!", "red box"],
        },
    )
    write_coco(
        tmp_path, "val", {"e.jpg": ["a blue circle"], "f.jpg": ["a red triangle"]}, start_id=100
    )
    return tmp_path


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small shapes data set, generated once per test session."""
    from captioning.data.shapes import generate_shapes

    return generate_shapes(tmp_path_factory.mktemp("shapes"), train=120, val=20, test=20, seed=3)


@pytest.fixture
def no_java(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring without java: the project tokenizer, no METEOR (fast; the plumbing is the same)."""
    from captioning.evaluation import metrics

    real_which = shutil.which
    monkeypatch.setattr(
        metrics.shutil, "which", lambda cmd, *a, **k: None if cmd == "java" else real_which(cmd)
    )


@pytest.fixture
def chromium() -> str:
    """The headless browser's path. Outside CI a missing Chromium skips the test (with how to
    install it); in CI (``CI`` set, where .ci/run installs it) it fails: the rendering must run."""
    found = next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    if found is None:
        message = "chromium not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}, but CI is set: .ci/run should have installed it")
        pytest.skip(f"{message}: the page is not rendered")
    return found


@pytest.fixture(scope="module")
def captioner(files: dict[str, Path]) -> Captioner:
    return Captioner.from_checkpoint(files["attention"], device="cpu", max_pixels=100_000)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model(CONFIG, vocab_size=len(VOCAB))
    path = save_checkpoint(
        tmp_path / "ck.pt",
        model=model.state_dict(),
        config=CONFIG,
        vocab=VOCAB.to_list(),
        epoch=1,
        step=1,
        metrics={},
    )
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(3):
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / f"{i}.png")
    return path, tmp_path / "images"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two checkpoints (attention, GRU), shapes images and bad files."""
    root = tmp_path_factory.mktemp("demo")
    shapes = shapes_examples(root / "images", count=3, seed=5)
    (root / "notes.png").write_text("not an image at all")
    Image.new("RGB", (400, 300), "white").save(root / "big.png")  # 120000 pixels
    return {
        "attention": tiny_checkpoint(
            root / "attention.pt", tiny_model_config(decoder="attention", max_len=6)
        ),
        "gru": tiny_checkpoint(root / "gru.pt"),
        "good": shapes[0],
        "other": shapes[1],
        "third": shapes[2],
        "bad": root / "notes.png",
        "big": root / "big.png",
    }


@pytest.fixture(scope="module")
def service(captioner: Captioner) -> DemoService:
    return DemoService(captioner)


@pytest.fixture
def small_refs(tmp_path: Path) -> Path:
    ann = {
        "images": [{"id": i, "file_name": f"{i}.jpg"} for i in (1, 2, 3)],
        "annotations": [
            {"id": 10 * i + j, "image_id": i, "caption": f"a cat number {i}"}
            for i in (1, 2, 3)
            for j in range(2)
        ],
    }
    return write_json(tmp_path / "refs.json", ann)


@pytest.fixture(scope="session")
def tiny_run(shapes_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained for 2 batches, best checkpoint picked by validation CIDEr (one for the
    session: the evaluation tests only read it)."""
    run = tmp_path_factory.mktemp("run")
    summary = fit(short_run_cfg(shapes_root, "trainer.monitor=CIDEr"), run_dir=run)
    row = summary["history"][0]
    assert {"val_CIDEr", "val_Bleu_4", "val_num_images"} <= set(row)
    assert summary["best"] == row["val_CIDEr"]
    return run
