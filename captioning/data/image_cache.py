"""Training images kept in memory once decoded: ``data.image_cache``.

Without augmentation every epoch reads, decodes and resizes each training image to the same
tensor. On a small data set that is a large share of a CPU step (the shapes demo: about 37 ms of
a 190 ms step, for 16 PNG files), so the first epoch keeps each resized image as ``uint8``
(3 x side x side bytes: 12 KiB at 64 px, 147 KiB at 224 px) and later epochs only normalise it.
What the model sees is bit for bit the same (a test holds it).

The cache lives in the process that loads the images, so it needs ``trainer.num_workers=0``
(loader workers start anew each epoch and would lose it). Like YOLO's ``cache=ram``, it is the
user's memory: ``auto`` turns it on only when the whole split fits in ``data.image_cache_gb``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import PIL.Image
import torch
from torch import Tensor

from captioning.data.records import SkippedImage
from captioning.data.transforms import ImageTransform
from captioning.errors import CaptioningError

__all__ = ["ImageCache", "use_image_cache"]

log = logging.getLogger(__name__)

_GIB = 1 << 30


def use_image_cache(
    setting: str | bool,
    *,
    images: int,
    transform: Callable,
    num_workers: int,
    max_gb: float,
) -> bool:
    """Decide whether training keeps its decoded images in memory.

    Args:
        setting: ``data.image_cache``: ``"auto"``, ``True``/``"true"`` or ``False``/``"false"``.
        images: the number of training images.
        transform: the training transform.
        num_workers: ``trainer.num_workers``.
        max_gb: ``data.image_cache_gb``, the most memory ``auto`` may use.

    Returns:
        ``True`` to cache.

    Raises:
        CaptioningError: the cache was forced on where it cannot work (one line).
    """
    value = str(setting).lower()
    if value not in ("auto", "true", "false"):
        raise CaptioningError(f"data.image_cache={setting!r}: use auto, true or false")
    if value == "false":
        return False
    deterministic = isinstance(transform, ImageTransform) and transform.deterministic
    if value == "true" and not deterministic:
        raise CaptioningError(
            "data.image_cache=true needs data.augment=false (augmented images change every "
            "epoch); use data.image_cache=auto"
        )
    if value == "true" and num_workers > 0:
        raise CaptioningError(
            f"data.image_cache=true needs trainer.num_workers=0 (got {num_workers}: each loader "
            "worker would decode its own copy and lose it at the epoch's end)"
        )
    if not deterministic or num_workers > 0:
        return False
    size = images * ImageCache.bytes_per_image(transform)
    if value == "auto" and size > max_gb * _GIB:
        log.info(
            "not keeping the training images in memory: %.1f GiB > data.image_cache_gb=%g",
            size / _GIB,
            max_gb,
        )
        return False
    return True


class ImageCache:
    """The resized ``uint8`` pixels of a data set's images, filled as they are first loaded.

    Args:
        transform: a deterministic :class:`ImageTransform` (what the items go through).
        size: the number of images (item indices ``0 .. size - 1``).
    """

    def __init__(self, transform: ImageTransform, size: int) -> None:
        if not transform.deterministic:
            raise CaptioningError("ImageCache needs a deterministic transform (no augmentation)")
        self.transform = transform
        self.pixels = torch.empty((size, *transform.output_size), dtype=torch.uint8)  # (N, 3, S, S)
        self.filled = torch.zeros(size, dtype=torch.bool)  # (N,)
        log.info(
            "keeping the %d training images in memory after their first epoch (%.2f GiB; "
            "data.image_cache)",
            size,
            size * self.bytes_per_image(transform) / _GIB,
        )

    @staticmethod
    def bytes_per_image(transform: ImageTransform) -> int:
        """Memory one cached image takes."""
        channels, height, width = transform.output_size
        return channels * height * width

    def __len__(self) -> int:
        """Images cached so far."""
        return int(self.filled.sum())

    def get(
        self, index: int, load: Callable[[], PIL.Image.Image | SkippedImage]
    ) -> Tensor | SkippedImage:
        """Item `index` transformed: from memory, or ``load()``'s PIL image (an unreadable
        image's :class:`SkippedImage` is returned as it is, and asked for again next time)."""
        if not bool(self.filled[index]):
            image = load()
            if isinstance(image, SkippedImage):
                return image
            self.pixels[index] = self.transform.pixels(image)
            self.filled[index] = True
        return self.transform.finish(self.pixels[index])
