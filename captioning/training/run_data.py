"""A run's data set-up: the split records, the vocabulary, and the training loader, whose data set
is either the images or, for a frozen encoder, its features cached on disk (the feature-cache
decision). (The torch data sets themselves live in :mod:`captioning.data`.)"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from captioning.data.captions import TokenizedCaptions
from captioning.data.config import DataConfig
from captioning.data.datasets import CaptionDataset
from captioning.data.features import FeatureCaptionDataset, build_feature_cache, use_feature_cache
from captioning.data.image_cache import use_image_cache
from captioning.data.loader import build_train_loader, prepare_data
from captioning.data.records import ImageRecord
from captioning.data.regions import RegionCaptionDataset, feature_sizes, features_for
from captioning.data.splits import annotation_files, load_split
from captioning.data.transforms import eval_transform, train_transform
from captioning.distributed import DistContext, barrier, broadcast_object
from captioning.io import check_writable
from captioning.models.caption_model import CaptionModel
from captioning.models.precomputed import TARGET as PRECOMPUTED
from captioning.vocab import Vocabulary

__all__ = [
    "bad_image_budget",
    "build_vocabulary",
    "load_records",
    "resolve_feature_sizes",
    "train_dataset",
    "train_loader",
]

log = logging.getLogger(__name__)


def load_records(
    data: DataConfig, ctx: DistContext, splits: tuple[str, ...] = ("train", "val")
) -> dict[str, list[ImageRecord]]:
    """The records of `splits`; a generated data set is written once (by rank 0)."""
    if ctx.is_main:
        prepare_data(data)
    barrier()
    if not ctx.is_main:
        prepare_data(data)  # checks only: rank 0 wrote it
    return {split: load_split(data, split) for split in splits}


def resolve_feature_sizes(config: Any) -> Any:
    """The run config with ``encoder.vector_dim`` / ``grid_dim`` of ``encoder=precomputed`` read
    from the feature files when the config leaves them null (so checkpoints store them).

    Args:
        config: the run's :class:`~captioning.training.config.RunConfig`.

    Returns:
        The same config, or a copy whose encoder node has the sizes.
    """
    encoder = config.encoder
    if encoder.target != PRECOMPUTED or None not in (
        encoder.argument("vector_dim"),
        encoder.argument("grid_dim"),
    ):
        return config
    vector_dim, grid_dim = feature_sizes(config.data)
    log.info("pre-extracted features: %d-d global, %d-d regions", vector_dim, grid_dim)
    node = {**encoder.node, "vector_dim": vector_dim, "grid_dim": grid_dim}
    return dataclasses.replace(config, encoder=type(encoder)(node))


def build_vocabulary(data: DataConfig, tokens: TokenizedCaptions) -> Vocabulary:
    """The vocabulary of the training captions (words seen at least ``data.min_count`` times).

    Args:
        data: the data settings.
        tokens: the training captions, tokenized once for the run (they are encoded too).

    Returns:
        The vocabulary.
    """
    return Vocabulary.from_counts(tokens.word_counts(), min_count=data.min_count)


def bad_image_budget(data: DataConfig, images: int) -> int:
    """How many unreadable training images ``data.max_bad_image_fraction`` allows per epoch."""
    return math.floor(data.max_bad_image_fraction * images)


def train_dataset(
    data: DataConfig,
    model: CaptionModel,
    records: list[ImageRecord],
    vocab: Vocabulary,
    *,
    encoder_config: Mapping[str, Any],
    seed: int,
    fine_tuning: bool,
    device: torch.device,
    ctx: DistContext,
    batch_size: int,
    num_workers: int,
    channels_last: bool = False,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
    tokens: TokenizedCaptions | None = None,
) -> Dataset | None:
    """The training images, the frozen encoder's cached features, or pre-extracted features
    (``encoder=precomputed``: :mod:`captioning.data.regions`).

    Features are cached (``data.feature_cache=auto``) when the encoder never learns: frozen,
    no fine-tuning scheduled, no augmentation. Rank 0 builds the cache; the others wait and
    then open it.

    Args:
        data: the data settings.
        model: the model (its encoder and preprocessing).
        records: the training records.
        vocab: the vocabulary.
        encoder_config: the ``encoder`` settings (part of the cache's fingerprint).
        seed: seeds the random augmentation and the choice of captions (with the epoch and the
            item).
        fine_tuning: encoder fine-tuning is scheduled (``optim.finetune_encoder_after``).
        device: where the encoder runs to build the cache.
        ctx: the process's place in a DDP run.
        batch_size: images per encoder batch while building the cache.
        num_workers: image-loading workers while building the cache.
        channels_last: channels-last encoder input.
        progress: show a progress bar while building the cache.
        should_stop: polled while building; ``True`` stops (the build resumes next time).
        tokens: the records' captions, tokenized once for the run (None: tokenized here).

    Returns:
        The dataset, or None when the cache build was stopped.
    """
    # what each image trains on: its captions, capped and sampled as data.* says
    captions = {
        "max_len": data.max_len,
        "tokens": tokens,
        "captions_per_image": data.captions_per_image,
        "seed": seed,
    }
    features = features_for(data, model.encoder)
    if features is not None:  # pre-extracted features: the items are already encoder outputs
        log.info("training from pre-extracted features in %s", features.att_dir)
        return RegionCaptionDataset(features, records, vocab, **captions)
    pre = model.encoder.preprocess
    frozen = not any(p.requires_grad for p in model.encoder.parameters())
    cached = use_feature_cache(
        data.feature_cache, frozen=frozen, fine_tuning=fine_tuning, augment=data.augment
    )
    if not cached:
        transform = train_transform(pre, augment=data.augment)
        in_memory = use_image_cache(
            data.image_cache,
            images=len(records),
            transform=transform,
            num_workers=num_workers,
            max_gb=data.image_cache_gb,
        )
        return CaptionDataset(
            records,
            vocab,
            transform,
            max_len=data.max_len,
            max_pixels=data.max_pixels,
            seed=seed if data.augment else None,
            tokens=tokens,
            cache_images=in_memory,
            captions_per_image=data.captions_per_image,
            caption_seed=seed,
        )
    cache_dir = Path(data.cache_dir)
    if ctx.is_main:
        check_writable(cache_dir, "data.cache_dir (or data.feature_cache=false)")

    def build_cache() -> Any:
        return build_feature_cache(
            cache_dir,
            model.encoder,
            records,
            eval_transform(pre),
            encoder_config=encoder_config,
            with_grid=bool(getattr(model.decoder, "has_attention", False)),
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            channels_last=channels_last,
            progress=progress and ctx.is_main,
            should_stop=should_stop,
            max_pixels=data.max_pixels,
            sources=annotation_files(data, "train"),
        )

    store = build_cache() if ctx.is_main else None  # rank 0 builds it ...
    if not broadcast_object(store is not None):  # (the other ranks wait here)
        return None
    if store is None:
        store = build_cache()  # ... and the others find it complete
    log.info("training the decoder from cached encoder features (%s)", store.folder)
    return FeatureCaptionDataset(store, records, vocab, **captions)


def train_loader(
    config: Any,
    model: CaptionModel,
    records: list[ImageRecord],
    vocab: Vocabulary,
    device: torch.device,
    ctx: DistContext,
    should_stop: Callable[[], bool] | None = None,
    tokens: TokenizedCaptions | None = None,
) -> DataLoader | None:
    """The training loader of a run (:func:`train_dataset`, shuffled and sharded per epoch).

    Args:
        config: the run's :class:`~captioning.training.config.RunConfig`.
        model: the model (its encoder and preprocessing).
        records: the training records.
        vocab: the vocabulary.
        device: where training runs.
        ctx: the process's place in a DDP run.
        should_stop: polled while a feature cache is built.
        tokens: the records' captions, tokenized once for the run (None: tokenized here).

    Returns:
        The loader, or None when the cache build was stopped.
    """
    t = config.trainer
    dataset = train_dataset(
        config.data,
        model,
        records,
        vocab,
        encoder_config=config.encoder.to_dict(),
        seed=config.seed,
        fine_tuning=config.optim.finetune_encoder_after is not None,
        device=device,
        ctx=ctx,
        batch_size=t.eval_batch_size,
        num_workers=t.num_workers,
        channels_last=t.channels_last,
        progress=t.progress,
        should_stop=should_stop,
        tokens=tokens,
    )
    if dataset is None:
        return None
    return build_train_loader(
        dataset,
        batch_size=t.batch_size,
        seed=config.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
        num_workers=t.num_workers,
        pin_memory=device.type == "cuda",
    )
