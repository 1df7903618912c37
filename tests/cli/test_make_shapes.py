"""tools/make_shapes.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

REPO = ROOT


def load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"captions_{split}.json").read_text())


def test_cli(tmp_path: Path) -> None:
    cmd = [sys.executable, "tools/make_shapes.py", "--root", str(tmp_path / "d")]
    cmd += ["--train", "4", "--val", "2", "--test", "2", "--seed", "3"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    assert "4 images, 20 captions" in result.stdout
    assert len(load(tmp_path / "d", "test")["images"]) == 2
