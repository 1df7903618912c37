"""Shared fixtures (the builders they use live in ``helpers.py``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import write_coco

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
