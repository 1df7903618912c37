"""Captions for a split, each image decoded once: the first step of every evaluation.

:func:`decode_images` captions every image of a per-image loader; :func:`decode_records` builds
that loader for a split's records (this rank's shard under DDP) and merges the shards' captions,
so every rank gets the captions of the whole split.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from captioning.data.images import MAX_PIXELS
from captioning.data.loader import ImageBatch, build_eval_loader
from captioning.data.records import ImageRecord
from captioning.data.regions import RegionFeatures
from captioning.data.transforms import eval_transform
from captioning.decoding import DecodingSettings, generate
from captioning.distributed import gather_dicts
from captioning.vocab import Vocabulary

__all__ = ["decode_images", "decode_records"]

log = logging.getLogger(__name__)


@torch.no_grad()
def decode_images(
    model: nn.Module,
    loader: Iterable[ImageBatch],
    vocab: Vocabulary,
    *,
    device: torch.device,
    decoding: DecodingSettings | Mapping[str, Any] | None = None,
    progress: bool = False,
) -> dict[int, str]:
    """Caption every image of a per-image loader once (the best caption of each).

    Images the loader could not read (``batch.skipped``) are logged and left out.

    Args:
        model: a CaptionModel.
        loader: batches of (images, image ids); each image appears once.
        vocab: turns ids back into words.
        device: where to compute.
        decoding: the decoding settings, or a mapping of some of them (the others keep
            :class:`~captioning.decoding.DecodingSettings`' defaults).
        progress: show a tqdm bar.

    Returns:
        image id -> caption (unreadable images have none).
    """
    model.eval()
    if not isinstance(decoding, DecodingSettings):
        decoding = DecodingSettings.from_mapping(decoding or {}, "decoding")
    ids = dict(bos_id=vocab.bos_id, eos_id=vocab.eos_id, pad_id=vocab.pad_id)
    out: dict[int, str] = {}
    for batch in tqdm(loader, desc="decoding", disable=not progress, leave=False):
        for item in batch.skipped:
            log.warning("left out of evaluation: %s", item.reason)
        if batch.image_ids.numel() == 0:
            continue
        if batch.features is not None:  # pre-extracted features (encoder=precomputed)
            features = batch.features.apply(lambda t: t.to(device))
            features = features._replace(vector=features.vector.float(), grid=features.grid.float())
        else:
            features = model.encode(batch.images.to(device))
        best = generate(model, features, decoding, **ids).best  # (B, T)
        for image_id, seq in zip(batch.image_ids.tolist(), best.tolist(), strict=True):
            if image_id in out:
                raise ValueError(f"image {image_id} appears twice in the evaluation loader")
            out[image_id] = vocab.decode(seq)
    return out


def decode_records(
    model: nn.Module,
    records: Sequence[ImageRecord],
    vocab: Vocabulary,
    *,
    device: torch.device,
    decoding: DecodingSettings | Mapping[str, Any] | None = None,
    batch_size: int = 100,
    num_workers: int = 0,
    max_pixels: int | None = MAX_PIXELS,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
    features: RegionFeatures | None = None,
) -> dict[int, str]:
    """Caption a split's images once each: this rank decodes ``records[rank::world_size]``,
    and the shards' captions are merged (all-gather; nothing to merge in one process).

    Args:
        model: a CaptionModel (its encoder's preprocessing is used).
        records: the split's images.
        vocab: the vocabulary.
        device: where to compute.
        decoding: the decoding settings.
        batch_size: images decoded together.
        num_workers: image-loading worker processes.
        max_pixels: larger images are left out like unreadable ones.
        rank: this process's rank (DDP).
        world_size: number of processes.
        progress: show a tqdm bar.
        features: the images' pre-extracted features, read instead of the images
            (``encoder=precomputed``).

    Returns:
        image id -> caption for every readable image of the split, on every rank.
    """
    loader = build_eval_loader(
        records[rank::world_size],
        eval_transform(model.encoder.preprocess),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        max_pixels=max_pixels,
        features=features,
    )
    captions = decode_images(
        model, loader, vocab, device=device, decoding=decoding, progress=progress
    )
    return gather_dicts(captions)
