"""Training, prediction and evaluation loops (no config parsing: plain arguments only)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from captioning.data.loader import CaptionBatch, ImageBatch
from captioning.decoding import generate
from captioning.metrics import evaluate_captions
from captioning.vocab import Vocabulary

__all__ = ["EpochStats", "caption_loss", "evaluate", "predict", "resolve_device", "train_one_epoch"]

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def caption_loss(logits: Tensor, targets: Tensor, *, pad_id: int = 0,
                 label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy per real (non-`<pad>`) target word.

    Args:
        logits: (B, T, V) decoder outputs.
        targets: (B, T) the next words; `<pad>` positions are ignored.
        pad_id: id of `<pad>`.
        label_smoothing: as in ``torch.nn.functional.cross_entropy``.

    Returns:
        A scalar loss.
    """
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id,
                           label_smoothing=label_smoothing)  # over (B * T) words


@dataclass
class EpochStats:
    """What one training epoch did."""

    loss: float
    words: int
    steps: int
    seconds: float
    skipped: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[CaptionBatch],
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    grad_clip: float | None = 5.0,
    pad_id: int = 0,
    label_smoothing: float = 0.0,
    epoch: int = 0,
    progress: bool = True,
    on_step: Any = None,
) -> EpochStats:
    """One pass over the training captions with teacher forcing.

    Args:
        model: a CaptionModel.
        loader: batches of (images, captions, lengths, image ids).
        optimizer: updates the parameters that require grad.
        device: where to compute.
        grad_clip: clip the global gradient norm to this (None: no clipping).
        pad_id: `<pad>` id, ignored by the loss.
        label_smoothing: cross-entropy label smoothing.
        epoch: shown in the progress bar.
        progress: show a tqdm bar.
        on_step: called as ``on_step(step_loss: float)`` after each optimizer step.

    Returns:
        Mean loss per word and counts.
    """
    model.train()
    total, words, steps, skipped, start = 0.0, 0, 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not progress, leave=False, dynamic_ncols=True)
    for batch in bar:
        images = batch.images.to(device, non_blocking=True)
        captions = batch.captions.to(device, non_blocking=True)
        inputs, targets = captions[:, :-1], captions[:, 1:]  # (B, T-1) each
        logits = model(images, inputs, batch.lengths - 1)  # (B, T-1, V)
        loss = caption_loss(logits, targets, pad_id=pad_id, label_smoothing=label_smoothing)
        if not torch.isfinite(loss):
            skipped += 1
            log.warning("non-finite loss at epoch %d, batch %d: step skipped", epoch, steps + skipped)
            optimizer.zero_grad(set_to_none=True)
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        n = int((targets != pad_id).sum())
        total, words, steps = total + loss.item() * n, words + n, steps + 1
        if on_step is not None:
            on_step(loss.item())
        bar.set_postfix(loss=f"{total / max(words, 1):.3f}")
    seconds = time.perf_counter() - start
    mean = total / words if words else math.nan
    return EpochStats(loss=mean, words=words, steps=steps, seconds=seconds, skipped=skipped)


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

    Args:
        model: a CaptionModel.
        loader: batches of (images, image ids); each image appears once.
        vocab: turns ids back into words.
        device: where to compute.
        decoding: keyword arguments for :func:`captioning.decoding.generate`.
        progress: show a tqdm bar.

    Returns:
        image id -> caption.
    """
    model.eval()
    decoding = dict(decoding or {})
    out: dict[int, str] = {}
    for batch in tqdm(loader, desc="decoding", disable=not progress, leave=False):
        features = model.encode(batch.images.to(device))
        gen = generate(model, features, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
                       pad_id=vocab.pad_id, **decoding)
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

    Args:
        model: a CaptionModel.
        loader: the per-image loader of the split.
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
    report = evaluate_captions({i: references[i] for i in predictions}, predictions, metrics=metrics)
    for notice in report.notices:
        log.info("%s", notice)
    scores = {**report.scores, "num_images": len(predictions)}
    return scores, predictions
