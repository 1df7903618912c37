"""The datasets training and evaluation iterate over: per image, with all its captions (training)
or once (evaluation), from any list of :class:`~captioning.data.records.ImageRecord`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from captioning.data.captions import EncodedCaptions, TokenizedCaptions
from captioning.data.images import MAX_PIXELS, ImageLoadError, load_image
from captioning.data.records import ImageRecord, SkippedImage
from captioning.data.transforms import ImageTransform
from captioning.vocab import Vocabulary

__all__ = ["CaptionDataset", "ImageDataset", "decode_min_side"]


def decode_min_side(transform: Callable) -> int | None:
    """The smallest image side ``transform`` needs (an :class:`ImageTransform`'s), else None:
    what :func:`~captioning.data.images.load_image` takes as ``min_side``."""
    return transform.decode_min_side if isinstance(transform, ImageTransform) else None


def _read_image(record: ImageRecord, transform: Callable, max_pixels: int | None) -> Any:
    """The record's transformed image, or a :class:`SkippedImage` when it cannot be read.

    A JPEG at least twice the size ``transform`` needs is decoded at reduced scale."""
    min_side = decode_min_side(transform)
    try:
        return transform(load_image(record.path, max_pixels=max_pixels, min_side=min_side))
    except ImageLoadError as exc:
        return SkippedImage(record.image_id, str(exc))


class CaptionDataset(Dataset):
    """Training view: item i is image i with all its captions (image tensor, [caption ids], id).

    An epoch covers every caption once. Captions of one image share one decoded, transformed
    image and, in the model, one encoder pass (neuraltalk2's ``seq_per_img``), which makes
    training with a learned encoder several times faster than one image load and encoder
    pass per caption. An image that cannot be read gives a :class:`SkippedImage` item instead
    (``collate_captions`` drops it and counts it in the batch), not an exception in a worker.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        vocab: Vocabulary,
        transform: Callable,
        *,
        max_len: int | None = None,
        max_pixels: int | None = MAX_PIXELS,
        seed: int | None = None,
        tokens: TokenizedCaptions | None = None,
    ) -> None:
        """Args:
        records: the images and their captions.
        vocab: maps words to ids (`<start>`/`<end>` added).
        transform: PIL image -> tensor (3, H, W).
        max_len: caption length cap in words (longer captions are truncated).
        max_pixels: larger images are skipped (see :func:`~captioning.data.images.load_image`).
        seed: for a random `transform` (augmentation): item i of epoch e is transformed with
            torch's generator seeded from ``(seed, e, i)``, whichever process loads it and
            whatever was loaded before (so resumed runs, and any number of loader workers, see
            the same augmentation); the caller's random state is left as it was. None: the
            transform draws from the global generator.
        tokens: the records' captions already tokenized (None: tokenized here).
        """
        self.records = list(records)
        self.transform = transform
        self.max_pixels = max_pixels
        self.seed, self.epoch = seed, 0
        self.captions = EncodedCaptions(self.records, vocab, max_len=max_len, tokens=tokens)

    @property
    def num_captions(self) -> int:
        """Captions in one epoch."""
        return len(self.captions)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose items are loaded next (it seeds the augmentation, see ``seed``)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> tuple[Tensor, list[Tensor], int] | SkippedImage:
        record = self.records[index]
        if self.seed is None:
            image = _read_image(record, self.transform, self.max_pixels)
        else:
            with torch.random.fork_rng(devices=[]):  # the caller's CPU generator is restored
                key = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
                torch.manual_seed(key % (1 << 63))
                image = _read_image(record, self.transform, self.max_pixels)
        if isinstance(image, SkippedImage):
            return image
        return image, self.captions.image(index), record.image_id


class ImageDataset(Dataset):
    """Per-image view for evaluation: item i is (image tensor, image id); each image once.

    An image that cannot be read gives a :class:`SkippedImage` item (``collate_images`` drops
    it and names it in the batch, so evaluation leaves it out of scoring).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable,
        *,
        max_pixels: int | None = MAX_PIXELS,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | SkippedImage:
        record = self.records[index]
        image = _read_image(record, self.transform, self.max_pixels)
        return image if isinstance(image, SkippedImage) else (image, record.image_id)

    def references(self) -> dict[int, list[str]]:
        """All reference captions, by image id."""
        return {r.image_id: list(r.captions) for r in self.records}
