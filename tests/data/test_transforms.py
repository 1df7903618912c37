"""Tests for captioning.data.transforms."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from captioning.data.transforms import Preprocess, eval_transform, train_transform
from captioning.errors import CaptioningError


def test_transforms() -> None:
    img = Image.new("L", (120, 80), 128)
    pre = Preprocess(resize_size=72, crop_size=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    x = eval_transform(pre)(img)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, (128 / 255 - 0.5) / 0.5), atol=1e-3)
    whole = Preprocess(64, 64, (0.5,) * 3, (0.5,) * 3, crop=False)
    assert eval_transform(whole)(Image.new("RGB", (200, 50))).shape == (3, 64, 64)
    torch.manual_seed(0)
    for p in (pre, whole):
        assert train_transform(p, augment=True)(img.convert("RGB")).shape == (3, 64, 64)
    assert "Flip" not in repr(train_transform(pre, augment=True))
    with pytest.raises(CaptioningError):
        Preprocess(resize_size=32, crop_size=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    from_yaml = Preprocess(64, 64, [0.5] * 3, [0.5] * 3, crop=False)  # type: ignore[arg-type]
    assert from_yaml == whole and hash(from_yaml) == hash(whole)
