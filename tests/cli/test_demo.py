"""tools/demo_app.py: the command's one-line refusals."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_tool

# -- fixtures -----------------------------------------------------------------------------------


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
