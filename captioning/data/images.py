"""Opening image files: the one place every image in the project is read.

:func:`load_image` turns any file Pillow can decode into a fully loaded 8-bit RGB image with
EXIF orientation applied, and turns every way that can fail (missing, not an image, truncated,
empty, too large) into one :class:`ImageLoadError` whose message names the file.
:func:`to_rgb` applies the same mode conversion to images that are already in memory.

Given ``min_side`` (the smallest side a transform needs), a JPEG at least twice that size is
decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT scaling (Pillow's ``draft``), several times
faster than a full decode; the image then carries a :class:`ReducedDecode` in its ``info`` so a
resize (``captioning.data.transforms``) maps it exactly like the full-size image.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from captioning.errors import CaptioningError, one_line

__all__ = [
    "MAX_PIXELS",
    "ImageLoadError",
    "ReducedDecode",
    "load_image",
    "reduced_decode",
    "to_rgb",
]

logger = logging.getLogger(__name__)
_PILLOW_LIMIT_LIFTED = threading.Lock()  # Image.MAX_IMAGE_PIXELS is module state

#: Default upper bound on ``width * height`` accepted by :func:`load_image` (checked before
#: decoding, so a decompression bomb never allocates its pixels).
MAX_PIXELS: int = 100_000_000

_WHITE = (255, 255, 255)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


_REDUCED_KEY = "captioning.reduced_decode"  # image.info key of a ReducedDecode


class ImageLoadError(CaptioningError):
    """An image file (or in-memory image) that cannot be turned into an RGB image."""


@dataclass(frozen=True)
class ReducedDecode:
    """How an image decoded at reduced scale (:func:`load_image` with ``min_side``) maps onto the
    full-size image.

    Attributes:
        source_size: ``(width, height)`` of the full-size image, upright.
        box: ``(left, top, right, bottom)`` of the part of the reduced image that holds the whole
            picture, in its pixels. Floats: at 1/s scale a side of n pixels becomes ``ceil(n/s)``
            pixels, the last one partly made of the JPEG's block padding.
    """

    source_size: tuple[int, int]
    box: tuple[float, float, float, float]


def reduced_decode(image: PIL.Image.Image) -> ReducedDecode | None:
    """The :class:`ReducedDecode` of an image :func:`load_image` decoded at reduced scale, else
    None (full-size decodes, images from anywhere else)."""
    value = image.info.get(_REDUCED_KEY)
    return value if isinstance(value, ReducedDecode) else None


def _draft(image: PIL.Image.Image, min_side: int) -> tuple[float, float] | None:
    """Ask Pillow to decode a JPEG at the smallest 1/2, 1/4, 1/8 scale whose sides both stay at
    least ``min_side``; returns the reduced image's size in full-image units / scale
    (``(width / s, height / s)``), or None when the image is decoded at full size."""
    if image.format != "JPEG":
        return None
    full = image.size
    drafted = image.draft(image.mode, (min_side, min_side))
    if drafted is None or image.size == full:
        return None
    return drafted[1][2], drafted[1][3]


def _upright_box(
    valid: tuple[float, float], size: tuple[int, int], orientation: int
) -> tuple[float, float, float, float]:
    """Where the picture lies in a reduced decode once EXIF ``orientation`` is applied.

    In the stored image of ``size`` the picture is ``(0, 0, *valid)`` (the padding is on the
    right and at the bottom); each orientation moves that corner as ``exif_transpose`` does.
    """
    (a, b), (w, h) = valid, size
    return {
        2: (w - a, 0, w, b),  # mirror left-right
        3: (w - a, h - b, w, h),  # rotate 180
        4: (0, h - b, a, h),  # mirror top-bottom
        5: (0, 0, b, a),  # transpose
        6: (h - b, 0, h, a),  # rotate 90 clockwise
        7: (h - b, w - a, h, w),  # transverse
        8: (0, w - a, b, w),  # rotate 90 counter-clockwise
    }.get(orientation, (0.0, 0.0, a, b))


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale a single-channel integer/float array to uint8 without clipping.

    ``I;16*`` data is scaled from 0..65535. ``I`` and ``F`` carry no bit depth, so the range
    is inferred: values already in 0..255 are kept (``F`` in 0..1 is scaled by 255), values in
    0..65535 are treated as 16-bit, anything else is min-max normalised.
    """
    data = values.astype(np.float64)
    if mode in _SIXTEEN_BIT_MODES:
        scaled = data / 257.0
    else:
        lo = float(np.nanmin(data)) if data.size else 0.0
        hi = float(np.nanmax(data)) if data.size else 0.0
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = data * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = data
        elif lo >= 0.0 and hi <= 65535.0:
            scaled = data / 257.0
        else:
            scaled = (data - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(data)
    return np.nan_to_num(np.rint(scaled), nan=0.0).clip(0, 255).astype(np.uint8)


def _over_white(image: PIL.Image.Image) -> PIL.Image.Image:
    """Composite an image with transparency onto a white background -> RGB."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB.

    Rules (shared with :func:`load_image`):

    * ``RGB`` without transparency is returned unchanged (same object).
    * ``1``/``L``/``P``/``YCbCr``/``CMYK``/... are converted with Pillow (CMYK without colour
      management; embedded ICC profiles are ignored).
    * 16-bit (``I;16*``), 32-bit integer (``I``) and float (``F``) grayscale are scaled to
      0..255, not clipped (see the range rules in ``_to_uint8``), then replicated to RGB.
    * Anything with transparency (``RGBA``, ``LA``, ``PA``, ``P``/``L``/``RGB`` with a
      ``transparency`` entry) is composited on a white background.

    Args:
        image: A PIL image, e.g. passed directly by a user instead of a path.

    Returns:
        An RGB image of the same size.

    Raises:
        ImageLoadError: The mode cannot be converted to RGB.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    try:
        rgba_palette = mode == "P" and image.palette is not None and image.palette.mode == "RGBA"
        if mode in _ALPHA_MODES or rgba_palette or "transparency" in image.info:
            return _over_white(image)
        if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
            gray = Image.fromarray(_to_uint8(np.asarray(image), mode), mode="L")
            return gray.convert("RGB")
        return image.convert("RGB")
    except (ValueError, OSError, TypeError) as exc:
        raise ImageLoadError(
            f"cannot convert a {mode} image of size {image.size} to RGB ({one_line(exc)}); "
            "convert it to RGB before passing it in"
        ) from exc


def load_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = MAX_PIXELS,
    min_side: int | None = None,
) -> PIL.Image.Image:
    """Open an image file as a fully decoded 8-bit RGB image.

    Applies the EXIF orientation tag, converts every mode with :func:`to_rgb` and decodes all
    pixel data here (``load()``), so a truncated or corrupt file fails now rather than inside
    a data loader worker later. Multi-frame files (GIF, TIFF) give their first frame.

    Args:
        path: The image file.
        max_pixels: Largest ``width * height`` accepted, checked from the header before any
            decoding; ``None``: no limit. This is the one size rule: Pillow's own
            decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is lifted while the file
            is opened here.
        min_side: The smallest width and height the caller needs (a transform's
            ``decode_min_side``). A JPEG whose sides are both at least twice this is decoded at
            the smallest of 1/2, 1/4, 1/8 scale that keeps both sides at least ``min_side``,
            and carries a :class:`ReducedDecode` (see :func:`reduced_decode`). Other formats,
            and ``None``, decode at full size.

    Returns:
        The image in RGB mode, upright.

    Raises:
        ImageLoadError: The file is missing, empty, not an image, truncated or corrupt, has a
            zero width or height, or is larger than ``max_pixels``. The message names the file
            (and ``max_pixels`` as a setting: :meth:`~captioning.errors.CaptioningError.named`).
    """
    where = os.fspath(path)

    def fail(problem: str, hint: str = "fix or remove the file", **settings: Any) -> ImageLoadError:
        message = f"cannot load image {where}: {problem}; {hint}"
        return ImageLoadError(message, settings=settings) if settings else ImageLoadError(message)

    file = Path(where)
    if not file.exists():
        raise fail("no such file", "check the path and the image directory in the config")
    if not file.is_file():
        raise fail("not a regular file", "pass the path of an image file")
    if file.stat().st_size == 0:
        raise fail("the file is empty (0 bytes)")

    with _PILLOW_LIMIT_LIFTED:  # max_pixels below is the limit (Pillow's would be a second one)
        pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            image = Image.open(file)
        except UnidentifiedImageError:
            raise fail("not a recognised image format") from None
        except OSError as exc:
            raise fail(one_line(exc)) from exc
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit

    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise fail(f"zero-size image ({width}x{height})")
        if max_pixels is not None and width * height > max_pixels:
            raise fail(  # names the setting: each front end writes it its own way
                f"{width}x{height} = {width * height} pixels exceeds {{max_pixels}}",
                "resize the image or raise {max_pixels:name}",
                max_pixels=max_pixels,
            )
        valid = _draft(image, min_side) if min_side else None
        try:
            image.load()
        except Exception as exc:  # Pillow decoders raise OSError, SyntaxError, ValueError, ...
            raise fail(f"truncated or corrupt image data ({one_line(exc)})") from exc
        try:
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            upright = ImageOps.exif_transpose(image) or image
        except Exception as exc:  # broken EXIF is common in the wild: keep the pixels as stored
            logger.warning("%s: unreadable EXIF orientation (%s), not rotated", where, exc)
            upright, orientation = image, 1
        try:
            rgb = to_rgb(upright)
        except ImageLoadError as exc:
            raise fail(str(exc).split(";")[0]) from exc
        if rgb is image:  # detach from the file handle closed by ``with``
            rgb = rgb.copy()
        if valid is not None:
            turned = orientation in (5, 6, 7, 8)
            rgb.info[_REDUCED_KEY] = ReducedDecode(
                source_size=(height, width) if turned else (width, height),
                box=_upright_box(valid, image.size, orientation),
            )
    logger.debug("loaded %s: %dx%d (%s)", where, rgb.width, rgb.height, image.mode)
    return rgb
