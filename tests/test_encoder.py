"""Encoders, preprocessing and image loading: CPU only, no network."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from captioning.contracts import EncoderOutput
from captioning.data.images import ImageLoadError, load_image, to_rgb
from captioning.data.transforms import (
    IMAGENET_MEAN,
    Preprocess,
    eval_transform,
    preprocess_from_weights,
    train_transform,
)
from captioning.errors import CaptioningError
from captioning.models.encoder import VGGEncoder, vgg11, vgg16, vgg_tiny

# ---------------------------------------------------------------------------------- encoders


@pytest.mark.parametrize(("size", "side"), [(64, 8), (96, 12)])
def test_vgg_tiny_shapes(size: int, side: int) -> None:
    torch.manual_seed(0)
    enc = vgg_tiny(width=8, image_size=size, vector_dim=64)
    out = enc(torch.randn(2, 3, size, size))
    assert isinstance(out, EncoderOutput)
    assert out.vector.shape == (2, 64) and enc.vector_dim == 64
    assert out.grid.shape == (2, side * side, 32) and enc.grid_dim == 32
    assert enc.grid_size == side * side and enc.image_size == size
    assert enc.num_blocks == 4 and not enc.frozen
    assert (out.vector >= 0).all()  # fc7 after ReLU
    assert enc.preprocess.crop is False and enc.preprocess.crop_size == size


def test_vgg_tiny_vector_keeps_spatial_layout() -> None:
    torch.manual_seed(0)
    enc = vgg_tiny(width=8, vector_dim=32).eval()
    x = torch.zeros(1, 3, 64, 64)
    left, right = x.clone(), x.clone()
    left[..., :, :16] = 3.0
    right[..., :, -16:] = 3.0
    with torch.no_grad():
        assert not torch.allclose(enc(left).vector, enc(right).vector)


def test_vgg_tiny_state_dict_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = vgg_tiny(width=8, vector_dim=32)
    path = tmp_path / "tiny.pt"
    torch.save(src.state_dict(), path)
    dst = vgg_tiny(weights=path, width=8, vector_dim=32)
    assert torch.equal(dst.features[0].weight, src.features[0].weight)
    with pytest.raises(CaptioningError, match=r"tiny\.pt"):
        vgg_tiny(weights=str(path), width=16, vector_dim=32)
    with pytest.raises(CaptioningError, match="no torchvision weights"):
        vgg_tiny(weights="DEFAULT")


def test_vgg16_shapes_224() -> None:
    enc = vgg16(weights=None).eval()
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 224, 224))
    assert out.vector.shape == (1, 4096)
    assert out.grid.shape == (1, 196, 512)
    assert (enc.vector_dim, enc.grid_dim, enc.grid_size) == (4096, 512, 196)
    assert enc.num_blocks == 5 and enc.frozen  # trainable=False by default
    assert "classifier.6.weight" not in enc.state_dict()
    assert enc.preprocess == Preprocess(256, 224, IMAGENET_MEAN, enc.preprocess.std)


@pytest.fixture(scope="module")
def vgg11_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    torch.manual_seed(0)
    state = torchvision.models.vgg11(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "vgg11.pth"
    torch.save(state, path)
    return path, state


def test_vgg11_local_state_dict(vgg11_state: tuple[Path, dict]) -> None:
    path, state = vgg11_state
    enc = vgg11(weights=str(path), image_size=32)
    assert torch.equal(enc.features[0].weight, state["features.0.weight"])
    assert torch.equal(enc.classifier[3].bias, state["classifier.3.bias"])
    assert enc.grid_size == 4  # 32 px -> 2x2 before pool5


def test_vgg11_weights_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(CaptioningError, match=r"nope\.pth"):
        vgg11(weights=missing)
    wrong = tmp_path / "wrong.pt"
    torch.save({"foo.weight": torch.zeros(3)}, wrong)
    with pytest.raises(CaptioningError, match=r"wrong\.pt.*missing"):
        vgg11(weights=str(wrong))
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(CaptioningError, match=r"junk\.pt"):
        vgg11(weights=junk)
    with pytest.raises(CaptioningError, match="IMAGENET1K_V1"):
        vgg11(weights="IMAGENET_V9")
    with pytest.raises(CaptioningError, match="do not fit"):
        vgg11(weights=torchvision.models.VGG16_Weights.IMAGENET1K_V1)


def test_grid_is_prepool_conv5(vgg11_state: tuple[Path, dict]) -> None:
    path, state = vgg11_state
    enc = vgg11(weights=path, image_size=64).eval()
    ref = torchvision.models.vgg11(weights=None).eval()
    ref.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = enc(x)
        conv5 = ref.features[:-1](x)  # (2, 512, 4, 4)
        fc7 = ref.classifier[:5](torch.flatten(ref.avgpool(ref.features(x)), 1))
    assert torch.allclose(out.grid, conv5.flatten(2).transpose(1, 2))
    assert torch.allclose(out.vector, fc7, atol=1e-6)


def _trainable_blocks(enc: VGGEncoder) -> list[bool]:
    return [
        all(p.requires_grad for layer in block for p in layer.parameters()) for block in enc._blocks
    ]


def test_freezing() -> None:
    enc = vgg_tiny(width=4, vector_dim=8, trainable=False)
    assert enc.frozen and not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not any(m.training for m in list(enc.modules())[1:])  # frozen: dropout, BN in eval
    enc = vgg11(image_size=32, trainable=True, fine_tune_from=4, batch_norm=True)
    assert _trainable_blocks(enc) == [False, False, False, True, True]
    assert all(p.requires_grad for p in enc.classifier.parameters())
    enc.train()
    assert not enc.features[1].training and enc.features[-3].training  # frozen BN in eval
    enc.set_trainable(True)
    assert all(p.requires_grad for p in enc.parameters())
    with pytest.raises(CaptioningError, match="fine_tune_from"):
        enc.set_trainable(True, fine_tune_from=6)
    with pytest.raises(CaptioningError, match="trainable=True"):
        enc.set_trainable(False, fine_tune_from=2)


def test_bad_input_shape() -> None:
    with pytest.raises(CaptioningError, match=r"\(B, 3, H, W\)"):
        vgg_tiny(width=4, vector_dim=8)(torch.randn(3, 64, 64))
    with pytest.raises(CaptioningError, match="too small"):
        vgg_tiny(width=4, image_size=8)


# ----------------------------------------------------------------------------- preprocessing


def test_preprocess_from_weights_metadata() -> None:
    weights = torchvision.models.VGG16_Weights.IMAGENET1K_V1  # metadata only, no download
    pre = preprocess_from_weights(weights)
    assert (pre.resize_size, pre.crop_size, pre.crop) == (256, 224, True)
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406))
    assert pre.std == pytest.approx((0.229, 0.224, 0.225))
    big = preprocess_from_weights(weights, image_size=448)
    assert (big.resize_size, big.crop_size) == (512, 448)
    feats = preprocess_from_weights(torchvision.models.VGG16_Weights.IMAGENET1K_FEATURES)
    assert feats.std[0] == pytest.approx(1 / 255)


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


# ------------------------------------------------------------------------------------ images


def _save(img: Image.Image, path: Path, **kwargs: object) -> Path:
    img.save(path, **kwargs)
    return path


def test_load_image_modes(tmp_path: Path) -> None:
    size = (40, 30)
    rgba = Image.new("RGBA", size, (255, 0, 0, 0))
    pal = Image.new("P", size, 0)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.info["transparency"] = 0
    deep = np.full(size[::-1], 65535 // 2, dtype=np.uint16)
    cases = {
        "rgb.png": (Image.new("RGB", size, (1, 2, 3)), (1, 2, 3)),
        "gray.png": (Image.new("L", size, 77), (77, 77, 77)),
        "rgba.png": (rgba, (255, 255, 255)),
        "pal.png": (pal, (255, 255, 255)),
        "cmyk.jpg": (Image.new("CMYK", size, (0, 0, 0, 0)), (255, 255, 255)),
        "deep.png": (Image.fromarray(deep), (127, 127, 127)),
        "photo.jpg": (Image.new("RGB", size, (200, 100, 50)), None),
    }
    for name, (img, pixel) in cases.items():
        out = load_image(_save(img, tmp_path / name))
        assert out.mode == "RGB" and out.size == size, name
        if pixel is not None:
            assert out.getpixel((5, 5)) == pytest.approx(pixel, abs=2), name


def test_load_image_exif_rotation(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red stripe on the left
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    out = load_image(_save(img, tmp_path / "rot.jpg", exif=exif, quality=95))
    assert out.size == (20, 40)
    assert out.getpixel((10, 3))[0] > 200  # the left stripe is now on top


def test_to_rgb_in_memory() -> None:
    assert to_rgb(Image.new("LA", (4, 4), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("F", (4, 4), 0.5)).getpixel((0, 0)) == (128, 128, 128)
    assert to_rgb(Image.new("I", (4, 4), 65535)).getpixel((0, 0)) == (255, 255, 255)
    clear_palette = Image.new("RGBA", (4, 4), (255, 0, 0, 0)).quantize()
    assert to_rgb(clear_palette).getpixel((0, 0)) == (255, 255, 255)
    rgb = Image.new("RGB", (4, 4))
    assert to_rgb(rgb) is rgb


def test_load_image_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).save(buf, "PNG")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    big = _save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    for path, kwargs, problem in [
        (text, {}, "not a recognised image"),
        (truncated, {}, "truncated"),
        (empty, {}, "empty"),
        (tmp_path / "missing.png", {}, "no such file"),
        (big, {"max_pixels": 5000}, "max_pixels"),
        (tmp_path, {}, "not a regular file"),
    ]:
        with pytest.raises(ImageLoadError, match=problem) as info:
            load_image(path, **kwargs)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_load_image_bad_header(tmp_path: Path) -> None:
    # valid PNG signature and IHDR chunk claiming a 0x0 image
    ihdr = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"
    path = tmp_path / "zero.png"
    path.write_bytes(data)
    with pytest.raises(ImageLoadError, match=r"zero\.png"):
        load_image(path)
