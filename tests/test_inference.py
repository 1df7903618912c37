"""The Captioner (captioning.inference)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_checkpoint
from PIL import Image

from captioning.checkpoint import save_checkpoint
from captioning.data.images import ImageLoadError
from captioning.inference import Captioner
from captioning.models.caption_model import build_model
from captioning.vocab import Vocabulary


def write_bad_images(folder: Path) -> dict[str, Path]:
    """One file for each way an image can be unreadable."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "PNG")
    bad = {
        "text": folder / "notes.jpg",
        "truncated": folder / "cut.png",
        "empty": folder / "empty.png",
    }
    bad["text"].write_text("not an image at all")
    bad["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    bad["empty"].write_bytes(b"")
    return bad


def test_captioner_preprocesses_what_it_can_and_names_the_rest(tmp_path):
    from captioning.inference import Captioner

    captioner = Captioner.from_checkpoint(
        tiny_checkpoint(tmp_path / "ck.pt"), device="cpu", max_pixels=5000
    )
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    big = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(big)
    bad = write_bad_images(tmp_path / "bad")
    inputs = [good, bad["text"], Image.new("L", (8, 8)), big, bad["empty"]]
    ok, failed = captioner.preprocess_many(inputs)
    assert [k for k, _ in ok] == [0, 2] and all(t.shape == (3, 16, 16) for _, t in ok)
    assert [k for k, _ in failed] == [1, 3, 4]
    for (k, exc), problem in zip(failed, ["not a recognised", "max_pixels", "empty"], strict=True):
        assert (
            isinstance(exc, ImageLoadError) and str(inputs[k]) in str(exc) and problem in str(exc)
        )
    assert isinstance(captioner.caption([t for _, t in ok]), list)  # tensors go straight in


# -- Captioner and tools/caption.py ------------------------------------------------------------

CONFIG = {
    "encoder": {
        "_target_": "captioning.models.encoder.vgg_tiny",
        "width": 8,
        "image_size": 32,
        "vector_dim": 16,
    },
    "decoder": {
        "_target_": "captioning.models.decoder.RNNDecoder",
        "cell": "lstm",
        "embed_dim": 8,
        "hidden_dim": 16,
    },
    "decoding": {
        "beam_size": 1,
        "max_len": 6,
        "length_penalty": 0.0,
        "no_repeat_ngram_size": 0,
        "n_best": 1,
    },
}
VOCAB = Vocabulary.build(["a red circle", "a blue square", "a green triangle left of it"])


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


def test_captioner_n_best(checkpoint):
    path, images = checkpoint
    captioner = Captioner.from_checkpoint(path, device="cpu")
    files = sorted(images.glob("*.png"))
    assert isinstance(captioner.caption(files[0]), str)
    assert isinstance(captioner.caption(files[0], beam_size=3), str)
    three = captioner.caption(files[0], beam_size=3, n_best=3)
    assert isinstance(three, list) and len(three) == 3
    many = captioner.caption(files, beam_size=3, n_best=2)
    assert len(many) == 3 and all(len(c) == 2 for c in many) and many[0] == three[:2]
    assert captioner.caption(files, beam_size=3) == [c[0] for c in many]
