"""Decode a split once per image and score it: what validation, testing and evaluation share.

:func:`predict` captions every image of a per-image loader once; :func:`evaluate` also scores the
captions against all their references with the official COCO metrics. Under DDP each rank
decodes its shard and the captions are merged and scored once. :func:`decode_checkpoint` is
``tools/evaluate.py``'s checkpoint mode: a trained checkpoint's captions for one split.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from captioning.data.images import MAX_PIXELS
from captioning.data.loader import ImageBatch, build_eval_loader
from captioning.data.records import ImageRecord
from captioning.data.transforms import eval_transform
from captioning.decoding import generate
from captioning.distributed import broadcast_object, gather_dicts, is_distributed
from captioning.errors import CaptioningError
from captioning.metrics import evaluate_captions
from captioning.vocab import Vocabulary

__all__ = ["DecodedSplit", "decode_checkpoint", "evaluate", "evaluate_records", "predict"]

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[ImageBatch],
    vocab: Vocabulary,
    *,
    device: torch.device,
    decoding: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> dict[int, str]:
    """Caption every image of a per-image loader once.

    Images the loader could not read (``batch.skipped``) are logged and left out.

    Args:
        model: a CaptionModel.
        loader: batches of (images, image ids); each image appears once.
        vocab: turns ids back into words.
        device: where to compute.
        decoding: keyword arguments for :func:`captioning.decoding.generate`.
        progress: show a tqdm bar.

    Returns:
        image id -> caption (unreadable images have none).
    """
    model.eval()
    decoding = dict(decoding or {})
    out: dict[int, str] = {}
    for batch in tqdm(loader, desc="decoding", disable=not progress, leave=False):
        for item in batch.skipped:
            log.warning("left out of evaluation: %s", item.reason)
        if batch.image_ids.numel() == 0:
            continue
        features = model.encode(batch.images.to(device))
        gen = generate(
            model,
            features,
            bos_id=vocab.bos_id,
            eos_id=vocab.eos_id,
            pad_id=vocab.pad_id,
            **decoding,
        )
        seqs = gen.sequences if gen.sequences.dim() == 2 else gen.sequences[:, 0]  # (B, T)
        for image_id, seq in zip(batch.image_ids.tolist(), seqs.tolist(), strict=True):
            if image_id in out:
                raise ValueError(f"image {image_id} appears twice in the evaluation loader")
            out[image_id] = vocab.decode(seq)
    return out


def evaluate(
    model: nn.Module,
    loader: Iterable[ImageBatch],
    vocab: Vocabulary,
    references: Mapping[int, list[str]],
    *,
    device: torch.device,
    decoding: Mapping[str, Any] | None = None,
    metrics: tuple[str, ...] = ("Bleu", "CIDEr"),
    progress: bool = False,
) -> tuple[dict[str, float], dict[int, str]]:
    """Decode each image once and score the captions against all its references.

    Under DDP each rank's `loader` holds a shard of the images: the shards' captions are
    merged (all-gather) and scored once, on rank 0, and every rank gets the scores.

    Args:
        model: a CaptionModel.
        loader: the per-image loader of the split (of this rank's shard under DDP).
        vocab: the vocabulary.
        references: image id -> reference captions.
        device: where to compute.
        decoding: arguments for :func:`captioning.decoding.generate`.
        metrics: which official scorers to run (see :func:`captioning.metrics.coco_scores`).
        progress: show a tqdm bar.

    Returns:
        (scores, predictions): official metric names plus ``nltk_Bleu_*`` and ``num_images``.
    """
    predictions = predict(model, loader, vocab, device=device, decoding=decoding, progress=progress)
    predictions = gather_dicts(predictions)  # all shards (a no-op in one process)
    scores = None
    if not is_distributed() or dist.get_rank() == 0:
        report = evaluate_captions(
            {i: references[i] for i in predictions}, predictions, metrics=metrics
        )
        for notice in report.notices:
            log.info("%s", notice)
        scores = {**report.scores, "num_images": len(predictions)}
    return broadcast_object(scores), predictions


def evaluate_records(
    model: nn.Module,
    records: Sequence[ImageRecord],
    vocab: Vocabulary,
    *,
    device: torch.device,
    decoding: Mapping[str, Any] | None = None,
    metrics: tuple[str, ...] = ("Bleu", "CIDEr"),
    batch_size: int = 100,
    num_workers: int = 0,
    max_pixels: int | None = MAX_PIXELS,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[dict[str, float], dict[int, str]]:
    """:func:`evaluate` on a split's records: this rank decodes ``records[rank::world_size]``.

    Args:
        model: a CaptionModel (its encoder's preprocessing is used).
        records: the split's images and reference captions.
        vocab: the vocabulary.
        device: where to compute.
        decoding: arguments for :func:`captioning.decoding.generate`.
        metrics: which official scorers to run.
        batch_size: images decoded together.
        num_workers: image-loading worker processes.
        max_pixels: larger images are left out like unreadable ones.
        rank: this process's rank (DDP).
        world_size: number of processes.

    Returns:
        (scores, predictions) as :func:`evaluate` returns them.
    """
    loader = build_eval_loader(
        records[rank::world_size],
        eval_transform(model.encoder.preprocess),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        max_pixels=max_pixels,
    )
    references = {r.image_id: list(r.captions) for r in records}
    return evaluate(
        model, loader, vocab, references, device=device, decoding=decoding, metrics=metrics
    )


@dataclass
class DecodedSplit:
    """A checkpoint's captions for one split (:func:`decode_checkpoint`).

    Attributes:
        predictions: image id -> caption, for every readable image of the split.
        references: image id -> reference captions, for the same images.
        images: image id -> image file, for every image of the split.
        decoding: the decoding arguments used (the run's config and the overrides).
        unreadable: how many images of the split could not be read (left out).
        data: the data settings the split was read with.
    """

    predictions: dict[int, str]
    references: dict[int, list[str]]
    images: dict[int, Path]
    decoding: dict[str, Any]
    unreadable: int
    data: Any = None


def decode_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    split: str = "test",
    data_root: str | os.PathLike | None = None,
    decoding: Mapping[str, Any] | None = None,
    batch_size: int = 100,
    device: str = "auto",
    progress: bool = False,
) -> DecodedSplit:
    """Caption every image of a split once with a trained checkpoint.

    Args:
        checkpoint: a checkpoint file or a run directory.
        split: a split of the data config stored in the checkpoint.
        data_root: where the data set is, when not where it was at training time.
        decoding: overrides of the checkpoint's decoding settings.
        batch_size: images decoded together.
        device: ``auto``, ``cpu``, ``cuda``, ...
        progress: show a progress bar.

    Returns:
        The captions, references and image files of the split.
    """
    from captioning.checkpoint import load_checkpoint
    from captioning.data.config import data_config
    from captioning.data.loader import prepare_data
    from captioning.data.splits import load_split
    from captioning.inference import Captioner

    ckpt = load_checkpoint(checkpoint)  # read once: the model and the data settings
    captioner = Captioner.from_checkpoint(ckpt, device=device, source=checkpoint)
    data = ckpt["config"].get("data")
    if not isinstance(data, Mapping):
        raise CaptioningError(
            f"{checkpoint} records no data config; score its captions in results mode "
            "(--references ANN.json --results RES.json)"
        )
    data = data_config({**data, **({"root": str(data_root)} if data_root else {})}, legacy=True)
    prepare_data(data, generate=False)  # never writes a data set where nobody asked for one
    records = load_split(data, split)
    loader = build_eval_loader(records, captioner.transform, batch_size=batch_size)
    args = {**captioner.decoding, **(decoding or {})}
    predictions = predict(
        captioner.model,
        loader,
        captioner.vocab,
        device=captioner.device,
        decoding=args,
        progress=progress,
    )
    if not predictions:
        raise CaptioningError(f"none of the {len(records)} images of split {split!r} can be read")
    references = {r.image_id: list(r.captions) for r in records if r.image_id in predictions}
    return DecodedSplit(
        predictions=predictions,
        references=references,
        images={r.image_id: r.path for r in records},
        decoding=args,
        unreadable=len(records) - len(predictions),
        data=data,
    )
