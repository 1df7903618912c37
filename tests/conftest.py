"""Shared fixtures: small COCO-format data written in the test, tiny configs, tool imports."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # tools/*.py import each other as plain modules

torch.set_num_threads(1)  # tiny models: one thread is faster, and immune to oversubscription


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts on one torch thread (tiny tensors gain nothing from threads, and two
    spin-waiting threads on a busy 2-core machine can be 1000x slower); whatever a test sets
    (``train()`` applies ``trainer.threads``) is undone afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The embedded default shrunk to seconds: the session's small shapes set (`shapes_root`), an
# 8-channel vgg_tiny, a 16/32 decoder, no progress bars. Each test adds what it needs.
TINY = [
    "data.sizes.train=120",
    "data.sizes.val=20",
    "data.sizes.test=20",
    "data.seed=3",
    "encoder.width=8",
    "encoder.vector_dim=32",
    "decoder.embed_dim=16",
    "decoder.hidden_dim=32",
    "trainer.progress=false",
]


def compose_train(*overrides: str) -> DictConfig:
    """``conf/train.yaml`` composed with hydra `overrides`, as ``tools/train.py`` would."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def tiny_cfg(shapes_root: Path, *overrides: str) -> DictConfig:
    """The tiny training config on the shapes data at `shapes_root`, plus `overrides`."""
    return compose_train(f"data.root={shapes_root}", *TINY, *overrides)


def write_coco(
    folder: Path, name: str, captions: dict[str, list[str]], *, size: int = 32, start_id: int = 1
) -> Path:
    """Write JPEG images and a COCO caption file; returns the annotation file path."""
    rng = np.random.default_rng(start_id)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for k, (file_name, caps) in enumerate(captions.items()):
        image_id = start_id + k
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "images" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        annotations += [
            {"id": image_id * 10 + j, "image_id": image_id, "caption": c}
            for j, c in enumerate(caps)
        ]
    path = folder / "annotations" / f"captions_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


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


def evil_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint whose unpickling would create `marker` (if anything unpickled it)."""

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save(
        {
            "format_version": 1,
            "model": {},
            "config": {},
            "vocab": [],
            "epoch": 0,
            "step": 0,
            "payload": Evil(),
        },
        path,
    )
    return path


HAS_JAVA = shutil.which("java") is not None
needs_java = pytest.mark.skipif(not HAS_JAVA, reason="java not found (PTB tokenizer, METEOR)")


@pytest.fixture
def no_java(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring without java: the project tokenizer, no METEOR (fast; the plumbing is the same)."""
    from captioning import metrics

    real_which = shutil.which
    monkeypatch.setattr(
        metrics.shutil, "which", lambda cmd, *a, **k: None if cmd == "java" else real_which(cmd)
    )


def write_json(path: Path, data: object) -> Path:
    """Write `data` as JSON to `path`; returns the path."""
    path.write_text(json.dumps(data))
    return path
