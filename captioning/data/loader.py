"""Batching: padding collate with lengths, and the train / evaluation data loaders."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader

from captioning.data.coco import CaptionDataset, ImageDataset, ImageRecord, load_coco_captions
from captioning.errors import CaptioningError
from captioning.vocab import Vocabulary

__all__ = [
    "CaptionBatch",
    "ImageBatch",
    "build_eval_loader",
    "build_loaders",
    "collate_captions",
    "collate_images",
    "load_split",
    "prepare_data",
]


class CaptionBatch(NamedTuple):
    """A training batch: images with one caption each."""

    images: Tensor  # (B, 3, H, W)
    captions: Tensor  # (B, T) `<start> ... <end>` then `<pad>`
    lengths: Tensor  # (B,) tokens before padding, specials included
    image_ids: Tensor  # (B,)


class ImageBatch(NamedTuple):
    """An evaluation batch: each image once."""

    images: Tensor  # (B, 3, H, W)
    image_ids: Tensor  # (B,)


def collate_captions(items: Sequence[tuple[Tensor, Tensor, int]], pad_id: int = 0) -> CaptionBatch:
    """Stack images, right-pad captions with `pad_id`, keep the lengths."""
    images, captions, ids = zip(*items, strict=True)
    lengths = torch.tensor([len(c) for c in captions], dtype=torch.long)
    padded = pad_sequence(list(captions), batch_first=True, padding_value=pad_id)  # (B, T)
    return CaptionBatch(torch.stack(images), padded, lengths, torch.tensor(ids, dtype=torch.long))


def collate_images(items: Sequence[tuple[Tensor, int]]) -> ImageBatch:
    """Stack images and their ids."""
    images, ids = zip(*items, strict=True)
    return ImageBatch(torch.stack(images), torch.tensor(ids, dtype=torch.long))


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
        batch_size: captions per training batch.
        eval_batch_size: images per evaluation batch.
        max_len: caption length cap in words.
        num_workers: loader worker processes.
        pin_memory: page-lock batches (for CUDA).
        seed: seeds the shuffling generator, so runs are reproducible.

    Returns:
        `{"train": loader, <split>: loader, ...}`.
    """
    generator = torch.Generator().manual_seed(seed)
    common = {
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "persistent_workers": num_workers > 0,
    }
    loaders = {
        "train": DataLoader(
            CaptionDataset(train_records, vocab, train_transform, max_len=max_len),
            batch_size=batch_size,
            shuffle=True,
            drop_last=False,
            generator=generator,
            collate_fn=collate_captions,
            **common,
        )
    }
    for split, records in eval_records.items():
        loaders[split] = build_eval_loader(records, eval_transform, batch_size=eval_batch_size,
                                           num_workers=num_workers, pin_memory=pin_memory)
    return loaders


def build_eval_loader(
    records: Sequence[ImageRecord],
    transform: Callable,
    *,
    batch_size: int = 100,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A per-image loader in record order: every image exactly once."""
    return DataLoader(ImageDataset(records, transform), batch_size=batch_size, shuffle=False,
                      collate_fn=collate_images, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0)


def prepare_data(data: Mapping[str, Any]) -> None:
    """Create generated data sets on first use (the shapes data); real data sets are checked.

    Args:
        data: the ``data`` config node (``root``, ``splits``, and for shapes ``generate``).
    """
    root = Path(str(data["root"]))
    if data.get("generate") == "shapes":
        from captioning.data.shapes import generate_shapes

        sizes = dict(data.get("sizes") or {})
        generate_shapes(
            root, seed=int(data.get("seed", 0)), **{k: int(v) for k, v in sizes.items()}
        )
    elif not root.is_dir():
        raise CaptioningError(
            f"data.root {root} does not exist: point data.root at your data set "
            f"(e.g. data.root=/data/coco); see the README for the expected layout"
        )


def load_split(data: Mapping[str, Any], split: str) -> list[ImageRecord]:
    """Records of one split as the ``data`` config describes it.

    Args:
        data: the ``data`` config node: ``root`` and ``splits.<split>.{annotations,images}``.
        split: e.g. ``"train"``, ``"val"``, ``"test"``.

    Returns:
        The split's image records.
    """
    splits = data.get("splits") or {}
    if split not in splits:
        raise CaptioningError(f"data config has no split {split!r}; it has {sorted(splits)}")
    root, spec = Path(str(data["root"])), splits[split]
    return load_coco_captions(
        root / spec["annotations"], root / spec["images"], strict=bool(data.get("strict", True))
    )
