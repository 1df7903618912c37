"""Batching: padding collate with lengths, the resumable (and distributed) epoch sampler, and the
train / evaluation data loaders, and :func:`prepare_data` (generated data sets on first use).
A split's records: :func:`captioning.data.splits.load_split`.

Kept as one file (about 390 lines): collate, the resumable sampler and the loaders built on it
form one contract every batch passes through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from captioning.contracts import EncoderOutput
from captioning.data.config import DataConfig, data_config
from captioning.data.datasets import CaptionDataset, ImageDataset
from captioning.data.images import MAX_PIXELS
from captioning.data.records import ImageRecord, SkippedImage
from captioning.data.regions import RegionFeatures, RegionImageDataset
from captioning.errors import CaptioningError
from captioning.vocab import Vocabulary

logger = logging.getLogger(__name__)

__all__ = [
    "CaptionBatch",
    "EpochSampler",
    "ImageBatch",
    "build_eval_loader",
    "build_loaders",
    "build_train_loader",
    "collate_captions",
    "collate_images",
    "prepare_data",
    "stack_features",
    "start_epoch",
]


class CaptionBatch(NamedTuple):
    """A training batch: images, and all their captions (each points at its image's row).

    Batches from the feature cache (:mod:`captioning.data.features`) carry the images'
    precomputed encoder output in ``features`` and ``images=None``.
    """

    images: Tensor | None  # (N, 3, H, W) each image once
    captions: Tensor  # (B, T) `<start> ... <end>` then `<pad>`
    lengths: Tensor  # (B,) tokens before padding, specials included
    image_ids: Tensor  # (B,) image id of each caption
    image_index: Tensor  # (B,) row of `images` each caption belongs to
    features: EncoderOutput | None = None  # vector (N, D_v), grid (N, L, D_g), instead of images
    skipped: tuple[SkippedImage, ...] = ()  # images of this batch that could not be read


class ImageBatch(NamedTuple):
    """An evaluation batch: each image once (``skipped``: those that could not be read).

    Batches of pre-extracted features (:mod:`captioning.data.regions`) carry them in
    ``features``, and ``images`` is an empty (0,) tensor.
    """

    images: Tensor  # (B, 3, H, W)
    image_ids: Tensor  # (B,)
    skipped: tuple[SkippedImage, ...] = ()
    features: EncoderOutput | None = None  # vector (B, D_v), grid (B, L, D_g), mask (B, L)


def stack_features(rows: Sequence[EncoderOutput]) -> EncoderOutput:
    """Batch per-image features: vectors stacked, grids right-padded with zeros to the most
    regions in the batch, and a ``mask`` (True = real region) when their counts differ.

    Args:
        rows: one per image: vector (D_v,), grid (K_i, D_g).

    Returns:
        vector (N, D_v), grid (N, L, D_g) with ``L = max K_i``, mask (N, L) bool or None when
        every image has L regions (as the reference sets ``att_masks=None``).
    """
    vector = torch.stack([r.vector for r in rows])  # (N, D_v)
    counts = [int(r.grid.shape[0]) for r in rows]
    if len(set(counts)) == 1:
        return EncoderOutput(vector, torch.stack([r.grid for r in rows]))  # (N, L, D_g)
    grid = pad_sequence([r.grid for r in rows], batch_first=True)  # (N, L, D_g), zeros padded
    mask = torch.arange(grid.shape[1]) < torch.tensor(counts).unsqueeze(1)  # (N, L)
    return EncoderOutput(vector, grid, mask)


def collate_captions(
    items: Sequence[tuple[Tensor | EncoderOutput, list[Tensor], int] | SkippedImage],
    pad_id: int = 0,
) -> CaptionBatch:
    """Stack images once, flatten their captions, right-pad with `pad_id`, keep the lengths.

    Items whose first element is an :class:`EncoderOutput` (one image's cached features) are
    stacked into ``features`` instead of ``images``. :class:`SkippedImage` items (unreadable
    images) are left out and listed in ``skipped``; when every item is one, the batch has no
    captions (``captions`` (0, 0)) and neither images nor features.
    """
    skipped = tuple(item for item in items if isinstance(item, SkippedImage))
    items = [item for item in items if not isinstance(item, SkippedImage)]
    if not items:
        empty = torch.zeros(0, dtype=torch.long)
        return CaptionBatch(None, empty.view(0, 0), empty, empty, empty, None, skipped)
    firsts = [first for first, _, _ in items]
    images = features = None
    if isinstance(firsts[0], EncoderOutput):
        features = stack_features(firsts)  # vector (N, D_v), grid (N, L, D_g), mask (N, L)
    else:
        images = torch.stack(firsts)  # (N, 3, H, W)
    captions = [c for _, caps, _ in items for c in caps]
    image_index = torch.tensor([k for k, (_, caps, _) in enumerate(items) for _ in caps])
    ids = torch.tensor([image_id for _, caps, image_id in items for _ in caps], dtype=torch.long)
    lengths = torch.tensor([len(c) for c in captions], dtype=torch.long)
    padded = pad_sequence(captions, batch_first=True, padding_value=pad_id)  # (B, T)
    return CaptionBatch(images, padded, lengths, ids, image_index, features, skipped)


def collate_images(
    items: Sequence[tuple[Tensor | EncoderOutput, int] | SkippedImage],
) -> ImageBatch:
    """Stack images (or pre-extracted features, see :func:`stack_features`) and their ids;
    :class:`SkippedImage` items are listed in ``skipped``.

    When every item is skipped, ``images`` is an empty (0,) tensor.
    """
    skipped = tuple(item for item in items if isinstance(item, SkippedImage))
    good = [item for item in items if not isinstance(item, SkippedImage)]
    if not good:
        return ImageBatch(torch.zeros(0), torch.zeros(0, dtype=torch.long), skipped)
    firsts, ids = zip(*good, strict=True)
    ids = torch.tensor(ids, dtype=torch.long)
    if isinstance(firsts[0], EncoderOutput):
        return ImageBatch(torch.zeros(0), ids, skipped, stack_features(firsts))
    return ImageBatch(torch.stack(firsts), ids, skipped)


def build_loaders(
    *,
    train_records: Sequence[ImageRecord],
    eval_records: dict[str, Sequence[ImageRecord]],
    vocab: Vocabulary,
    train_transform: Callable,
    eval_transform: Callable,
    batch_size: int = 64,
    eval_batch_size: int = 100,
    max_len: int | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    seed: int = 0,
) -> dict[str, DataLoader]:
    """The training loader (shuffled captions) and one per-image loader per evaluation split.

    Args:
        train_records: images and captions to train on.
        eval_records: split name -> records, decoded once per image.
        vocab: the vocabulary.
        train_transform: PIL -> tensor for training images.
        eval_transform: PIL -> tensor for evaluation images.
        batch_size: images per training batch; each brings all its captions.
        eval_batch_size: images per evaluation batch.
        max_len: caption length cap in words.
        num_workers: loader worker processes.
        pin_memory: page-lock batches (for CUDA).
        seed: seeds the shuffling (see :class:`EpochSampler`), so runs are reproducible.

    Returns:
        `{"train": loader, <split>: loader, ...}`.
    """
    loaders = {
        "train": build_train_loader(
            CaptionDataset(train_records, vocab, train_transform, max_len=max_len),
            batch_size=batch_size,
            seed=seed,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )
    }
    for split, records in eval_records.items():
        loaders[split] = build_eval_loader(
            records,
            eval_transform,
            batch_size=eval_batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )
    return loaders


class EpochSampler(DistributedSampler):
    """Shuffled image order that depends only on ``(seed, epoch)``, sharded over ranks, resumable.

    A :class:`~torch.utils.data.DistributedSampler` (permutation ``randperm(n)`` from a generator
    seeded with ``seed + epoch``, padded to a multiple of ``world_size``, rank ``r`` takes items
    ``r, r + world_size, ...``) that also works without an initialised process group
    (``world_size=1`` is plain shuffling) and can start an epoch part-way (``start``), so a run
    resumed mid-epoch sees exactly the batches it had not seen.

    With image-grouped batches, step ``j`` of ``world_size`` ranks with ``b`` images each covers
    the same images as step ``j`` of one process with ``world_size * b`` images.

    Args:
        dataset: the training dataset (one item per image).
        seed: base seed of the permutation.
        shuffle: shuffle (``False``: in order).
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip its first `start` items (of this rank)."""
        super().set_epoch(epoch)
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)

    def state_dict(self) -> dict[str, int]:
        """Where the sampler stands: seed, epoch and the items skipped at the epoch's start."""
        return {"seed": self.seed, "epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue from :meth:`state_dict`'s output (the permutation's seed included)."""
        self.seed, self.epoch, self.start = (
            int(state["seed"]),
            int(state["epoch"]),
            int(state["start"]),
        )


def build_train_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """The shuffled, image-grouped training loader over any per-image caption dataset.

    Args:
        dataset: items ``(image tensor or EncoderOutput, [caption ids], image id)``.
        batch_size: images per batch (per rank); each brings all its captions.
        seed: seeds the shuffling.
        rank: this process's rank (distributed training).
        world_size: number of processes.
        num_workers: loader worker processes, started anew each epoch (so that they see the
            dataset's epoch, which seeds its random augmentation).
        pin_memory: page-lock batches (for CUDA).

    Returns:
        A loader whose ``sampler`` is an :class:`EpochSampler`; call :func:`start_epoch` before
        each epoch.
    """
    sampler = EpochSampler(dataset, seed=seed, rank=rank, world_size=world_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=False,
        collate_fn=collate_captions,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator(),
    )


def start_epoch(loader: DataLoader, epoch: int, *, skip_batches: int = 0) -> None:
    """Prepare a :func:`build_train_loader` loader for `epoch` (1-based), skipping some batches.

    The shuffling depends on ``(seed, epoch)`` only, the loader's own generator (which seeds its
    workers) is reseeded the same way, and a dataset with ``set_epoch`` (random augmentation)
    is told the epoch, so the global random state is never touched and an epoch resumed
    part-way sees exactly the items, in the same order and with the same augmentation.

    Args:
        loader: the training loader.
        epoch: the epoch about to start.
        skip_batches: batches of this epoch already done (resuming mid-epoch).
    """
    sampler = loader.sampler
    sampler.set_epoch(epoch, start=skip_batches * int(loader.batch_size))
    loader.generator.manual_seed(sampler.seed * 100_003 + epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


def build_eval_loader(
    records: Sequence[ImageRecord],
    transform: Callable,
    *,
    batch_size: int = 100,
    num_workers: int = 0,
    pin_memory: bool = False,
    max_pixels: int | None = MAX_PIXELS,
    features: RegionFeatures | None = None,
) -> DataLoader:
    """A per-image loader in record order: every image exactly once.

    Args:
        records: the split's images.
        transform: PIL -> tensor.
        batch_size: images per batch.
        num_workers: loader worker processes.
        pin_memory: page-lock batches (for CUDA).
        max_pixels: larger images are skipped like unreadable ones (``ImageBatch.skipped``).
        features: read each image's pre-extracted features instead (``transform`` unused).

    Returns:
        A loader of :class:`ImageBatch`.
    """
    dataset = (
        ImageDataset(records, transform, max_pixels=max_pixels)
        if features is None
        else RegionImageDataset(features, records)
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_images,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )


def prepare_data(data: DataConfig | Mapping[str, Any], *, generate: bool = True) -> None:
    """Create a generated data set on first use (the shapes data, and with
    ``data.features.extract=shapes`` its region features); check that real ones exist.

    Args:
        data: the ``data`` settings (``root``, and for shapes ``generate``, ``seed``, ``sizes``).
        generate: write the shapes data when it is missing (training the default does); False
            (evaluation, captioning) makes a missing data set an error instead, so nothing is
            ever generated where nobody asked for it.
    """
    data = data_config(data, legacy=True)
    root = Path(data.root)
    if data.generate == "shapes" and generate:
        from captioning.data.shapes import generate_shapes

        if not root.is_dir():
            logger.info("generating the shapes data set in %s (data.root)", root.resolve())
        sizes = {k: int(v) for k, v in (data.sizes or {}).items()}
        generate_shapes(root, seed=int(data.seed or 0), **sizes)
    if data.features.extract == "shapes" and generate:
        from captioning.data.shapes_regions import extract_shapes_regions

        folders = {k: v and root / v for k, v in vars(data.features).items() if k != "extract"}
        extract_shapes_regions(root, **folders)
    elif not root.is_dir():
        hint = (
            "the shapes data is generated by training (tools/train.py) or by "
            "tools/make_shapes.py; pass the folder it is in"
            if data.generate == "shapes"
            else "point data.root at your data set (e.g. data.root=/data/coco); see the README "
            "for the expected layout"
        )
        raise CaptioningError(f"data.root {root} ({root.resolve()}) does not exist: {hint}")
