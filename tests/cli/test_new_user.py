"""A new user's first ten minutes: the mistakes people make on their first commands are one
`error:` line each, and nothing is written where nobody asked for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_tool, tiny_checkpoint
from PIL import Image

from captioning.errors import CaptioningError
from captioning.inference import Captioner


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (20, 16), (200, 30, 30)).save(path)
    return path


@pytest.mark.parametrize(
    "device, needles",
    [("banana", ["device='banana' is not a device"]), ("cuda:7", ["cuda:7"])],
)
def test_a_wrong_device_is_one_line(tmp_path: Path, image: Path, device: str, needles) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a GPU 7")
    ckpt = tiny_checkpoint(tmp_path / "ck.pt")
    assert_one_line_error(run_tool("caption.py", "-c", ckpt, image, "--device", device), *needles)
    assert_one_line_error(run_tool("evaluate.py", "-c", ckpt, "--device", device), *needles)


def test_a_text_file_as_checkpoint_is_one_line(tmp_path: Path, image: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my training notes\n")
    out = run_tool("caption.py", "--checkpoint", notes, image)
    assert_one_line_error(out, "notes.txt is not a readable checkpoint (not a torch file)")


def test_captioning_no_images_is_nothing_not_a_traceback(tmp_path: Path) -> None:
    captioner = Captioner.from_checkpoint(tiny_checkpoint(tmp_path / "ck.pt"), device="cpu")
    assert captioner.caption([]) == []
    with pytest.raises(CaptioningError, match="no images to decode"):
        captioner.generate([])


def test_evaluate_never_generates_a_data_set(tmp_path: Path, shapes_root: Path) -> None:
    """A run trained on the shapes data, evaluated with a --data-root that does not exist, or
    from another folder (its relative data root then points nowhere): one error line, and no
    data set is generated there."""
    from captioning.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint(tmp_path / "ck.pt"))
    config = {
        **ckpt["config"],
        "data": {
            "name": "shapes",
            "root": "data/shapes",  # relative, as the default config writes it
            "generate": "shapes",
            "sizes": {"train": 4, "val": 2, "test": 2},
            "splits": {"test": {"annotations": "annotations/captions_test.json", "images": "x"}},
        },
    }
    fields = {k: ckpt[k] for k in ("model", "vocab", "epoch", "step")}
    path = save_checkpoint(tmp_path / "shapes.pt", config=config, **fields)
    nowhere = tmp_path / "nonexistent"
    out = run_tool("evaluate.py", "-c", path, "--data-root", nowhere)
    assert_one_line_error(out, f"data.root {nowhere}", "does not exist")
    assert not nowhere.exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run_tool("evaluate.py", "-c", path, cwd=elsewhere)
    assert_one_line_error(out, "data.root data/shapes", "does not exist")
    assert not (elsewhere / "data").exists()
