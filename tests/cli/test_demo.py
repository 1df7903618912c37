"""tools/demo_app.py: the command's one-line refusals."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_tool, tiny_checkpoint, tiny_model_config
from PIL import Image

from captioning.app import shapes_examples

# -- fixtures -----------------------------------------------------------------------------------


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


def test_cli_refuses_a_missing_checkpoint_in_one_line(tmp_path: Path) -> None:
    pytest.importorskip("gradio", reason="the app extra is not installed")
    out = run_tool("demo_app.py", "--checkpoint", tmp_path / "missing.pt", timeout=120)
    assert_one_line_error(out, "missing.pt")


@pytest.mark.slow
def test_cli_refuses_a_taken_port_in_one_line(files: dict[str, Path]) -> None:
    pytest.importorskip("gradio", reason="the app extra is not installed")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_tool("demo_app.py", "-c", files["gru"], "--port", port, timeout=120)
    assert_one_line_error(out, f"127.0.0.1:{port}")
