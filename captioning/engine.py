"""Training, prediction and evaluation loops (no config parsing: plain arguments only)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from captioning.data.loader import CaptionBatch, ImageBatch
from captioning.decoding import generate
from captioning.distributed import all_reduce_sum, broadcast_object, gather_dicts, is_distributed
from captioning.metrics import evaluate_captions
from captioning.models.encoder import EncoderOutput
from captioning.objective import CaptionObjective
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
    """What one training epoch did (``loss`` and ``words`` over all ranks when distributed)."""

    loss: float
    words: int
    steps: int
    seconds: float
    skipped: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False  # stopped early by `should_stop`; ``steps + skipped`` batches done
    loss_sum: float = 0.0  # summed per-word loss (``loss * words``, without rounding)


def _to_device(
    batch: CaptionBatch, device: torch.device, channels_last: bool
) -> Tensor | EncoderOutput:
    """The batch's images (or cached features, as float32) on `device`."""
    if batch.features is not None:
        return EncoderOutput(*(f.to(device, non_blocking=True).float() for f in batch.features))
    images = batch.images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is set on any rank (so that all ranks stop at the same batch)."""
    if not is_distributed():
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0)


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
    objective: nn.Module | None = None,
    scheduler: Any = None,
    sample_prob: float = 0.0,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    should_stop: Callable[[], bool] | None = None,
    total: int | None = None,
) -> EpochStats:
    """One pass over the training captions (teacher forcing, or scheduled sampling).

    The loss of a step is the cross-entropy summed over the batch's real target words divided
    by their number. Under DDP each rank divides its sum by the *global* word count (one
    all-reduce) and multiplies by the world size, so DDP's gradient averaging yields exactly
    the gradient of one process holding all ranks' batches, whatever each rank's word count.

    Args:
        model: a CaptionModel (its parameters are clipped; train mode is set here).
        loader: batches of images or cached features, with all their captions.
        optimizer: updates the parameters that get a gradient.
        device: where to compute.
        grad_clip: clip the global gradient norm to this (None: no clipping).
        pad_id: `<pad>` id, ignored by the loss (when `objective` is None).
        label_smoothing: cross-entropy label smoothing (when `objective` is None).
        epoch: shown in the progress bar.
        progress: show a tqdm bar.
        on_step: called as ``on_step(step_loss: float)`` after each optimizer step.
        objective: a :class:`~captioning.objective.CaptionObjective` of `model`, possibly
            wrapped in ``DistributedDataParallel`` / ``torch.compile`` (None: built here).
        scheduler: stepped after every optimizer step (per-step learning-rate schedule).
        sample_prob: scheduled-sampling probability for this epoch.
        autocast_dtype: mixed precision (``torch.bfloat16`` / ``torch.float16``; None: off).
        scaler: gradient scaler (float16 mixed precision).
        channels_last: feed the encoder channels-last images.
        should_stop: polled before each batch; ``True`` ends the epoch early (``interrupted``).
        total: number of batches, for the progress bar.

    Returns:
        Mean loss per word and counts.
    """
    if objective is None:
        objective = CaptionObjective(model, pad_id=pad_id, label_smoothing=label_smoothing)
    world = dist.get_world_size() if is_distributed() else 1
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    loss_sum, words, steps, skipped, start = 0.0, 0, 0, 0, time.perf_counter()
    interrupted = False
    bar = tqdm(total=total, desc=f"epoch {epoch}", disable=not progress, leave=False,
               dynamic_ncols=True)
    batches = iter(loader)
    while True:
        if should_stop is not None and _any_rank(should_stop(), device):
            interrupted = True
            break
        batch = next(batches, None)
        if batch is None:
            break
        images = _to_device(batch, device, channels_last)
        captions = batch.captions.to(device, non_blocking=True)
        index = batch.image_index.to(device, non_blocking=True)
        local = int((batch.captions[:, 1:] != pad_id).sum())
        global_words = all_reduce_sum(torch.tensor([float(local)], device=device))  # (1,)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            summed, _ = objective(images, captions, batch.lengths, index, sample_prob=sample_prob)
        loss = summed * world / global_words.clamp(min=1.0)  # (1,)
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler is not None else loss).sum().backward()
        if scaler is not None:
            scaler.unscale_(optimizer)
        norm = nn.utils.clip_grad_norm_(params, grad_clip or float("inf"))
        # the norm of the (all-reduced) gradient is the same on every rank: all skip together
        finite = bool(torch.isfinite(norm)) and (world > 1 or bool(torch.isfinite(summed)))
        if scaler is not None:
            scaler.step(optimizer)  # skips the update itself when gradients are not finite
            scaler.update()
        elif finite:
            optimizer.step()
        if not finite:
            skipped += 1
            log.warning("non-finite loss or gradient at epoch %d, batch %d: step skipped",
                        epoch, steps + skipped)
            optimizer.zero_grad(set_to_none=True)
            bar.update(1)
            continue
        if scheduler is not None:
            scheduler.step()
        loss_sum, words, steps = loss_sum + summed.item(), words + local, steps + 1
        if on_step is not None:
            on_step(summed.item() / max(local, 1))
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / max(words, 1):.3f}")
    bar.close()
    totals = torch.tensor([loss_sum, float(words)], device=device, dtype=torch.float64)
    totals = all_reduce_sum(totals)  # over ranks
    loss_sum, words = float(totals[0]), int(totals[1])
    seconds = time.perf_counter() - start
    mean = loss_sum / words if words else math.nan
    return EpochStats(loss=mean, words=words, steps=steps, seconds=seconds, skipped=skipped,
                      interrupted=interrupted, loss_sum=loss_sum)


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
        report = evaluate_captions({i: references[i] for i in predictions}, predictions,
                                   metrics=metrics)
        for notice in report.notices:
            log.info("%s", notice)
        scores = {**report.scores, "num_images": len(predictions)}
    return broadcast_object(scores), predictions
