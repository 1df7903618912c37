"""Bad inputs give the project's own one-line errors, and nothing is lost."""

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.checkpoint import load_checkpoint
from captioning.data.images import ImageLoadError, load_image

ROOT = Path(__file__).resolve().parents[1]


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for fmt, mode in [("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"), ("PNG", "P"),
                      ("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK")]:
        pixels = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert(mode)
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(0, 4)
    if kind == 0:  # flip random bytes
        for _ in range(int(rng.integers(1, 20))):
            buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
    elif kind == 1:  # truncate
        buf = buf[: int(rng.integers(0, len(buf)))]
    elif kind == 2:  # splice a random chunk
        at = int(rng.integers(0, len(buf)))
        buf[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    else:  # overwrite a header region
        at = int(rng.integers(0, min(64, len(buf))))
        buf[at : at + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    return bytes(buf)


def test_fuzzed_images_load_or_raise_our_error(tmp_path):
    """A few hundred mutated PNG/JPEG files: each loads as RGB or raises ImageLoadError."""
    rng = np.random.default_rng(1234)
    seeds = _seed_images()
    loaded = failed = 0
    for i in range(300):
        data = _mutate(seeds[i % len(seeds)], rng)
        path = tmp_path / f"f{i}.{'png' if i % len(seeds) < 4 else 'jpg'}"
        path.write_bytes(data)
        try:
            image = load_image(path)
        except ImageLoadError as exc:
            assert path.name in str(exc) and "\n" not in str(exc)
            failed += 1
        else:
            assert image.mode == "RGB" and min(image.size) > 0
            loaded += 1
    assert loaded > 0 and failed > 0  # the mutations exercise both outcomes


WRITER = """
import sys, torch
from captioning.checkpoint import save_checkpoint
path, = sys.argv[1:]
big = {f"w{i}": torch.randn(256, 256) for i in range(64)}   # ~16 MB: the write takes a while
print("ready", flush=True)
step = 1
while True:
    save_checkpoint(path, model=big, config={"step": step}, vocab=["<pad>"], epoch=step, step=step)
    step += 1
"""


@pytest.mark.slow
def test_sigkill_while_saving_leaves_a_readable_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for delay in (0.3, 0.7, 1.1, 1.6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        while not path.exists():
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = load_checkpoint(path)  # the previous complete checkpoint, never a torn one
        assert ckpt["config"]["step"] == ckpt["step"] and len(ckpt["model"]) == 64
        assert torch.isfinite(ckpt["model"]["w0"]).all()
