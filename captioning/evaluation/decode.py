"""Captions for a split, each image decoded once: the first step of every evaluation.

:func:`decode_images` captions every image of a per-image loader; :func:`decode_records` builds
that loader for a split's records (this rank's shard under DDP) and merges the shards' captions,
so every rank gets the captions of the whole split. Given a :class:`ReferenceLoss`, both also
sum the teacher-forced cross-entropy of each image's reference captions from the same encoder
pass (the validation loss).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm

from captioning.contracts import EncoderOutput
from captioning.data.images import MAX_PIXELS
from captioning.data.loader import ImageBatch, build_eval_loader
from captioning.data.records import ImageRecord
from captioning.data.regions import RegionFeatures
from captioning.data.transforms import eval_transform
from captioning.decoding import DecodingSettings, generate
from captioning.distributed import gather_dicts, gather_objects
from captioning.vocab import Vocabulary

__all__ = ["ReferenceLoss", "decode_images", "decode_records"]

log = logging.getLogger(__name__)


@dataclass
class ReferenceLoss:
    """The reference captions' teacher-forced cross-entropy, summed over the images decoded
    (what validation reports as ``loss``: nats per target word, ``<end>`` included).

    Plain maximum likelihood: no label smoothing, no attention regulariser, no scheduled
    sampling, so it compares across objectives and decoders (and with ``train_xe``, or
    ``train_loss`` when training has none of those).

    Attributes:
        references: image id -> its reference captions as ids ``<start> w1 ... wn <end>``
            (cut as the training captions are, ``data.max_len``).
        pad_id: ``<pad>``'s id.
        total: cross-entropy summed so far (nats).
        words: target words so far.
        chunk: captions teacher-forced together (their logits are chunk x T x V floats).
    """

    references: Mapping[int, Sequence[Sequence[int]]]
    pad_id: int = 0
    total: float = 0.0
    words: int = 0
    chunk: int = 256

    @classmethod
    def of_records(
        cls, records: Iterable[Any], vocab: Vocabulary, *, max_len: int | None = None
    ) -> ReferenceLoss:
        """The references of `records` (``image_id``, ``captions``) encoded with `vocab`."""
        references = {
            r.image_id: [vocab.encode(c, max_len=max_len) for c in r.captions] for r in records
        }
        return cls(references, pad_id=vocab.pad_id)

    def add(self, model: nn.Module, features: EncoderOutput, image_ids: Sequence[int]) -> None:
        """Add the references of `image_ids`, whose encoder output is `features` (N rows)."""
        captions = [
            torch.tensor(c, dtype=torch.long) for i in image_ids for c in self.references[i]
        ]
        if not captions:
            return
        rows = [k for k, i in enumerate(image_ids) for _ in self.references[i]]
        device = features.vector.device
        for start in range(0, len(captions), self.chunk):  # (C, T, V) logits a chunk at a time
            part = captions[start : start + self.chunk]
            padded = pad_sequence(part, batch_first=True, padding_value=self.pad_id)  # (C, T+1)
            padded = padded.to(device)
            steps = torch.tensor([len(c) - 1 for c in part])  # (C,) input words, on the CPU
            index = torch.tensor(rows[start : start + self.chunk], device=device)  # (C,) rows
            logits = model(features, padded[:, :-1], steps, index)  # (C, T, V)
            targets = padded[:, 1:]  # (C, T)
            xe = F.cross_entropy(
                logits.float().flatten(0, 1),
                targets.flatten(),
                ignore_index=self.pad_id,
                reduction="sum",
            )
            self.total += float(xe)
            self.words += int((targets != self.pad_id).sum())

    def merge(self) -> None:
        """Sum every rank's totals into this one's (DDP; nothing to do in one process)."""
        parts = gather_objects((self.total, self.words))
        self.total, self.words = sum(t for t, _ in parts), sum(w for _, w in parts)

    @property
    def per_word(self) -> float:
        """Cross-entropy per target word (nan before any word)."""
        return self.total / self.words if self.words else float("nan")


@torch.no_grad()
def decode_images(
    model: nn.Module,
    loader: Iterable[ImageBatch],
    vocab: Vocabulary,
    *,
    device: torch.device,
    decoding: DecodingSettings | Mapping[str, Any] | None = None,
    progress: bool = False,
    loss: ReferenceLoss | None = None,
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
        loss: also add each image's references to this :class:`ReferenceLoss`.

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
            features = batch.features.to(device)
        else:
            features = model.encode(batch.images.to(device))
        if loss is not None:
            loss.add(model, features, batch.image_ids.tolist())
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
    loss: ReferenceLoss | None = None,
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
        loss: also add the references of the images read to this :class:`ReferenceLoss`,
            summed over all ranks' shards.
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
        model, loader, vocab, device=device, decoding=decoding, progress=progress, loss=loss
    )
    if loss is not None:
        loss.merge()
    return gather_dicts(captions)
