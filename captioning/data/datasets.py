"""The datasets training and evaluation iterate over: per image, with all its captions (training)
or once (evaluation), from any list of :class:`~captioning.data.records.ImageRecord`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from captioning.data.captions import EncodedCaptions, TokenizedCaptions
from captioning.data.image_cache import ImageCache
from captioning.data.images import MAX_PIXELS, ImageLoadError, load_image
from captioning.data.records import ImageRecord, SkippedImage
from captioning.data.transforms import ImageTransform
from captioning.errors import CaptioningError
from captioning.vocab import Vocabulary

__all__ = ["CaptionDataset", "ImageDataset", "PerImageCaptions", "decode_min_side"]


def decode_min_side(transform: Callable) -> int | None:
    """The smallest image side ``transform`` needs (an :class:`ImageTransform`'s), else None:
    what :func:`~captioning.data.images.load_image` takes as ``min_side``."""
    return transform.decode_min_side if isinstance(transform, ImageTransform) else None


def _load(record: ImageRecord, transform: Callable, max_pixels: int | None) -> Any:
    """The record's decoded PIL image, or a :class:`SkippedImage` when it cannot be read.

    A JPEG at least twice the size ``transform`` needs is decoded at reduced scale."""
    try:
        return load_image(record.path, max_pixels=max_pixels, min_side=decode_min_side(transform))
    except ImageLoadError as exc:
        return SkippedImage(record.image_id, str(exc))


def _read_image(record: ImageRecord, transform: Callable, max_pixels: int | None) -> Any:
    """The record's transformed image, or a :class:`SkippedImage` when it cannot be read."""
    image = _load(record, transform, max_pixels)
    return image if isinstance(image, SkippedImage) else transform(image)


class PerImageCaptions(Dataset):
    """What the training data sets share: item i is (image i's input, its captions, its id).

    The input is the image (:class:`CaptionDataset`), a frozen encoder's cached features
    (:class:`~captioning.data.features.FeatureCaptionDataset`) or pre-extracted regions
    (:class:`~captioning.data.regions.RegionCaptionDataset`); subclasses give it with
    :meth:`_input`. The captions of one image share that input and, in the model, one encoder
    pass (neuraltalk2's and self-critical.pytorch's ``seq_per_img``). With
    ``captions_per_image=k`` an image brings k of its captions, drawn afresh each epoch from
    ``(seed, epoch, index)`` (the same in resumed runs and in any loader worker); an image with
    at most k captions brings them all.

    Args:
        records: the images and their captions.
        vocab: maps words to ids (`<start>`/`<end>` added).
        max_len: caption length cap in words (longer captions are truncated).
        tokens: the records' captions already tokenized (None: tokenized here).
        captions_per_image: captions per image and epoch (None: all).
        seed: seeds the choice of captions.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        vocab: Vocabulary,
        *,
        max_len: int | None = None,
        tokens: TokenizedCaptions | None = None,
        captions_per_image: int | None = None,
        seed: int = 0,
    ) -> None:
        if captions_per_image is not None and captions_per_image < 1:
            raise CaptioningError(f"captions_per_image must be >= 1, got {captions_per_image}")
        self.records = list(records)
        self.captions = EncodedCaptions(self.records, vocab, max_len=max_len, tokens=tokens)
        self.captions_per_image = captions_per_image
        self.caption_seed, self.epoch = seed, 0

    @property
    def num_captions(self) -> int:
        """Captions in one epoch."""
        if self.captions_per_image is None:
            return len(self.captions)
        return int(np.minimum(np.diff(self.captions.first), self.captions_per_image).sum())

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose items are loaded next (it seeds the choice of captions and any
        random augmentation)."""
        self.epoch = int(epoch)

    def captions_of(self, index: int) -> list[Tensor]:
        """The captions image `index` trains on this epoch, each a (length,) ``int64`` tensor."""
        captions = self.captions.image(index)
        k = self.captions_per_image
        if k is None or len(captions) <= k:
            return captions
        rng = np.random.default_rng((self.caption_seed, self.epoch, index))
        return [captions[j] for j in np.sort(rng.choice(len(captions), k, replace=False))]

    def _input(self, index: int) -> Any:
        """Image `index`'s model input, or a :class:`SkippedImage`."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Any, list[Tensor], int] | SkippedImage:
        item = self._input(index)
        if isinstance(item, SkippedImage):
            return item
        return item, self.captions_of(index), self.records[index].image_id


class CaptionDataset(PerImageCaptions):
    """Training view over images: item i is (image tensor, [caption ids], id).

    An epoch covers every caption once (or ``captions_per_image`` of each image's). Loading an
    image once for all its captions, and encoding it once in the model, makes training with a
    learned encoder several times faster than one image load and encoder pass per caption. An
    image that cannot be read gives a :class:`SkippedImage` item instead (``collate_captions``
    drops it and counts it in the batch), not an exception in a worker.
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
        cache_images: bool = False,
        captions_per_image: int | None = None,
        caption_seed: int | None = None,
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
        cache_images: keep each resized image in memory after its first load (needs a
            deterministic `transform` and loading in this process: ``data.image_cache``).
        captions_per_image: captions per image and epoch (None: all; see
            :class:`PerImageCaptions`).
        caption_seed: seeds the choice of captions (None: `seed`, else 0).
        """
        super().__init__(
            records,
            vocab,
            max_len=max_len,
            tokens=tokens,
            captions_per_image=captions_per_image,
            seed=caption_seed if caption_seed is not None else seed or 0,
        )
        self.transform = transform
        self.max_pixels = max_pixels
        self.seed = seed
        self.cache = ImageCache(transform, len(self.records)) if cache_images else None

    def _input(self, index: int) -> Tensor | SkippedImage:
        record = self.records[index]
        if self.cache is not None:
            return self.cache.get(index, lambda: _load(record, self.transform, self.max_pixels))
        if self.seed is None:
            return _read_image(record, self.transform, self.max_pixels)
        with torch.random.fork_rng(devices=[]):  # the caller's CPU generator is restored
            key = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
            torch.manual_seed(key % (1 << 63))
            return _read_image(record, self.transform, self.max_pixels)


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
