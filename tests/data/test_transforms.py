"""Tests for captioning.data.transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.data.datasets import ImageDataset, decode_min_side
from captioning.data.images import load_image, reduced_decode
from captioning.data.records import ImageRecord
from captioning.data.transforms import (
    Preprocess,
    eval_transform,
    imagenet_preprocess,
    train_transform,
)
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


# ------------------------------------------------------------- reduced-size JPEG decoding


def _photo_jpeg(path: Path, size: tuple[int, int], orientation: int = 1) -> Path:
    """A photo-like JPEG (gradients, mild noise, a sharp-edged square), quality 90."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([128 + 90 * np.sin(x / (30 + 9 * c) + y / 45) for c in range(3)], -1)
    pixels += np.random.default_rng(0).normal(0, 6, pixels.shape)
    pixels[height // 4 : height // 2, width // 5 : width // 2] = (250, 20, 20)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    exif = image.getexif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(path, quality=90, exif=exif)
    return path


def _mad_255(a: torch.Tensor, b: torch.Tensor, pre: Preprocess) -> float:
    """Mean absolute difference of two normalised tensors in /255 pixel units."""
    std = torch.tensor(pre.std)[:, None, None]
    return float(((a - b) * std).abs().mean()) * 255


CROP = imagenet_preprocess(64)  # resize 73, center crop 64
WHOLE = imagenet_preprocess(64, crop=False)


@pytest.mark.parametrize("pre", [CROP, WHOLE], ids=["crop", "whole"])
@pytest.mark.parametrize("augment", [False, True], ids=["eval", "train"])
def test_reduced_decode_gives_the_same_size_within_2_of_255_of_full_decoding(
    tmp_path, pre, augment
):
    path = _photo_jpeg(tmp_path / "odd.jpg", (645, 427))  # not a multiple of the DCT scale
    transform = train_transform(pre, augment=augment)
    assert transform.decode_min_side == (73 if pre.crop else 64)
    reduced_image = load_image(path, min_side=transform.decode_min_side)
    assert reduced_image.size == (162, 107)  # 1/4 scale: 427 // 73 = 5, 427 // 64 = 6
    assert reduced_decode(reduced_image).source_size == (645, 427)
    torch.manual_seed(3)
    full = transform(load_image(path))
    torch.manual_seed(3)
    reduced = transform(reduced_image)
    assert reduced.shape == full.shape == (3, 64, 64)
    assert _mad_255(full, reduced, pre) < 2.0


def test_reduced_decode_is_not_used_when_the_target_is_more_than_half_the_source(tmp_path):
    path = _photo_jpeg(tmp_path / "coco.jpg", (640, 480))
    vgg16 = eval_transform(imagenet_preprocess(224))  # needs 256: 480 < 2 x 256
    image = load_image(path, min_side=vgg16.decode_min_side)
    assert image.size == (640, 480) and reduced_decode(image) is None
    assert torch.equal(vgg16(image), vgg16(load_image(path)))
    half = load_image(path, min_side=240)  # exactly half: 1/2 scale, both sides still >= 240
    assert half.size == (320, 240) and reduced_decode(half) is not None


def test_png_is_decoded_in_full_whatever_the_min_side(tmp_path):
    path = tmp_path / "big.png"
    Image.open(_photo_jpeg(tmp_path / "src.jpg", (640, 480))).save(path)
    image = load_image(path, min_side=32)
    assert image.size == (640, 480) and reduced_decode(image) is None
    assert np.array_equal(np.asarray(image), np.asarray(load_image(path)))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_reduced_decode_honours_exif_orientation(tmp_path, orientation):
    path = _photo_jpeg(tmp_path / "turned.jpg", (645, 427), orientation)
    full_image = load_image(path)
    reduced_image = load_image(path, min_side=64)
    assert reduced_decode(reduced_image).source_size == full_image.size
    turned = orientation >= 5
    assert full_image.size == ((427, 645) if turned else (645, 427))
    assert reduced_image.size == ((107, 162) if turned else (162, 107))
    for pre in (CROP, WHOLE):
        transform = eval_transform(pre)
        assert _mad_255(transform(full_image), transform(reduced_image), pre) < 2.0


def test_datasets_decode_jpegs_at_the_reduced_scale_their_transform_allows(tmp_path):
    path = _photo_jpeg(tmp_path / "a.jpg", (645, 427))
    transform = eval_transform(CROP)
    assert decode_min_side(transform) == 73 and decode_min_side(lambda image: image) is None
    record = ImageRecord(image_id=1, path=path, captions=("a square",))
    tensor, image_id = ImageDataset([record], transform)[0]
    assert image_id == 1
    assert torch.equal(tensor, transform(load_image(path, min_side=73)))
    assert not torch.equal(tensor, transform(load_image(path)))
