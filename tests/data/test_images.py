"""The one image loader (captioning.data.images): modes, EXIF, bad images (corrupt, truncated,
empty, not an image, decompression bombs).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from captioning.data.images import ImageLoadError, _upright_box, load_image, to_rgb


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for fmt, mode in [
        ("PNG", "RGB"),
        ("PNG", "RGBA"),
        ("PNG", "L"),
        ("PNG", "P"),
        ("JPEG", "RGB"),
        ("JPEG", "L"),
        ("JPEG", "CMYK"),
    ]:
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


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (a decompression bomb's first bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 12_000, 12_000)  # 144 M pixels, 432 MB as RGB
    with pytest.raises(ImageLoadError, match=r"bomb\.png.*exceeds max_pixels=100000000"):
        load_image(bomb)
    small = png_header_only(tmp_path / "small.png", 300, 200)
    with pytest.raises(ImageLoadError, match="60000 pixels exceeds max_pixels=50000"):
        load_image(small, max_pixels=50_000)


def test_max_pixels_is_the_one_size_rule_not_pillows(tmp_path, monkeypatch):
    """Pillow refuses images over twice its MAX_IMAGE_PIXELS with its own message; the project's
    max_pixels is the rule instead (None: no limit), and Pillow's setting is left as it was."""
    from PIL import Image as PILImage

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1_000)  # 100 x 100 is over twice that
    path = tmp_path / "plain.png"
    Image.new("RGB", (100, 100), (10, 200, 30)).save(path)
    assert load_image(path, max_pixels=None).size == (100, 100)
    assert load_image(path, max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageLoadError, match="10000 pixels exceeds max_pixels=5000"):
        load_image(path, max_pixels=5_000)
    assert PILImage.MAX_IMAGE_PIXELS == 1_000
    big = png_header_only(tmp_path / "big.png", 100_000, 100_000)  # 10 gigapixels
    with pytest.raises(ImageLoadError, match=r"big\.png.*exceeds max_pixels=100000000") as info:
        load_image(big)
    assert "decompression bomb" not in str(info.value)


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


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_box_follows_the_picture_through_each_exif_orientation(orientation):
    """In a reduced decode the picture is the top-left (a, b) of the stored image (the padding
    right and below); after ``exif_transpose`` the box must be where those pixels went."""
    stored, (a, b) = Image.new("L", (9, 6), 0), (7, 4)
    stored.paste(255, (0, 0, a, b))
    exif = stored.getexif()
    exif[0x0112] = orientation
    stored.info["exif"] = exif.tobytes()
    upright = ImageOps.exif_transpose(stored)
    assert _upright_box((a, b), stored.size, orientation) == upright.getbbox()
