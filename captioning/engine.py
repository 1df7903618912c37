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
from captioning.errors import CaptioningError
from captioning.metrics import evaluate_captions
from captioning.models.encoder import EncoderOutput
from captioning.objective import CaptionObjective
from captioning.vocab import Vocabulary

__all__ = [
    "EpochStats",
    "NonFiniteLossError",
    "caption_loss",
    "evaluate",
    "predict",
    "resolve_device",
    "train_one_epoch",
]

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def caption_loss(
    logits: Tensor, targets: Tensor, *, pad_id: int = 0, label_smoothing: float = 0.0
) -> Tensor:
    """Mean cross-entropy per real (non-`<pad>`) target word.

    Args:
        logits: (B, T, V) decoder outputs.
        targets: (B, T) the next words; `<pad>` positions are ignored.
        pad_id: id of `<pad>`.
        label_smoothing: as in ``torch.nn.functional.cross_entropy``.

    Returns:
        A scalar loss.
    """
    return F.cross_entropy(
        logits.flatten(0, 1),
        targets.flatten(),
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
    )  # over (B * T) words


class NonFiniteLossError(CaptioningError):
    """The loss (or its gradient) stayed non-finite for too many consecutive steps."""


@dataclass
class EpochStats:
    """What one training epoch did (``loss`` and ``words`` over all ranks when distributed)."""

    loss: float
    words: int
    steps: int
    seconds: float
    skipped: int = 0  # batches without an optimizer step (non-finite, or no readable image)
    extra: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False  # stopped early by `should_stop`; ``steps + skipped`` batches done
    loss_sum: float = 0.0  # summed per-word loss (``loss * words``, without rounding)
    nonfinite: int = 0  # steps skipped because the loss or the gradient norm was not finite
    nonfinite_streak: int = 0  # consecutive non-finite steps at the end of the epoch
    bad_images: int = 0  # images that could not be read and were left out (this rank)


def _unusable(batch: CaptionBatch, batch_norm_1d: bool) -> str | None:
    """Why a batch cannot be trained on (None: it can)."""
    if batch.captions.size(0) == 0:
        return "no image of the batch could be read"
    if batch_norm_1d and batch.images is not None and batch.images.size(0) == 1:
        return "a single image is left, and the model's BatchNorm1d layers need two or more"
    return None


def _skip_unreadable(batch: CaptionBatch, epoch: int, bad: int, max_bad: int | None) -> int:
    """Log the batch's unreadable images; return the epoch's new count, or raise over budget."""
    for item in batch.skipped:
        log.warning("epoch %d: skipped an unreadable training image: %s", epoch, item.reason)
    bad += len(batch.skipped)
    if max_bad is not None and bad > max_bad:
        raise CaptioningError(
            f"{bad} training images could not be read in epoch {epoch}, more than the "
            f"{max_bad} that data.max_bad_image_fraction allows (last: {batch.skipped[-1].reason})"
            "; fix or remove the files, or raise data.max_bad_image_fraction"
        )
    return bad


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
    max_bad_images: int | None = None,
    max_nonfinite_steps: int | None = None,
    nonfinite_streak: int = 0,
) -> EpochStats:
    """One pass over the training captions (teacher forcing, or scheduled sampling).

    The loss of a step is the cross-entropy summed over the batch's real target words divided
    by their number. Under DDP each rank divides its sum by the *global* word count (one
    all-reduce) and multiplies by the world size, so DDP's gradient averaging yields exactly
    the gradient of one process holding all ranks' batches, whatever each rank's word count.

    Faults do not end the epoch: a step whose loss or gradient norm is not finite is skipped
    (no update; counted in ``nonfinite``), and images the loader could not read
    (``batch.skipped``) are logged, left out and counted in ``bad_images``. Only
    `max_nonfinite_steps` consecutive non-finite steps (:class:`NonFiniteLossError`) or more
    than `max_bad_images` unreadable images (:class:`~captioning.errors.CaptioningError`) stop
    training.

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
        max_bad_images: most unreadable images allowed in the epoch (None: no limit).
        max_nonfinite_steps: stop after this many consecutive non-finite steps (None: never).
        nonfinite_streak: consecutive non-finite steps at the end of the previous epoch.

    Returns:
        Mean loss per word and counts.

    Raises:
        NonFiniteLossError: `max_nonfinite_steps` consecutive steps were not finite.
        CaptioningError: more than `max_bad_images` images could not be read.
    """
    if objective is None:
        objective = CaptionObjective(model, pad_id=pad_id, label_smoothing=label_smoothing)
    world = dist.get_world_size() if is_distributed() else 1
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    loss_sum, words, steps, skipped, start = 0.0, 0, 0, 0, time.perf_counter()
    interrupted, nonfinite, streak, bad = False, 0, nonfinite_streak, 0
    batch_norm_1d = any(isinstance(m, nn.BatchNorm1d) and m.training for m in model.modules())
    bar = tqdm(
        total=total, desc=f"epoch {epoch}", disable=not progress, leave=False, dynamic_ncols=True
    )
    batches = iter(loader)
    while True:
        if should_stop is not None and _any_rank(should_stop(), device):
            interrupted = True
            break
        batch = next(batches, None)
        if batch is None:
            break
        if batch.skipped:
            bad = _skip_unreadable(batch, epoch, bad, max_bad_images)
        unusable = _unusable(batch, batch_norm_1d)
        if unusable:
            if world > 1:
                raise CaptioningError(
                    f"epoch {epoch}: {unusable} on this rank, so the ranks cannot take the step "
                    "together; fix or remove the unreadable images"
                )
            log.warning("epoch %d: batch skipped: %s", epoch, unusable)
            skipped += 1
            bar.update(1)
            continue
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
        loss_ok = world > 1 or bool(torch.isfinite(summed))
        finite = bool(torch.isfinite(norm)) and loss_ok
        if scaler is not None:
            scaler.step(optimizer)  # skips the update itself when gradients are not finite
            scaler.update()
        elif finite:
            optimizer.step()
        if not finite:
            skipped, nonfinite = skipped + 1, nonfinite + 1
            # float16 loss scaling overflows now and then by design: only a non-finite loss
            # counts towards the streak there
            streak += 1 if scaler is None or not loss_ok else 0
            log.warning(
                "non-finite loss or gradient at epoch %d, batch %d: step skipped",
                epoch,
                steps + skipped,
            )
            optimizer.zero_grad(set_to_none=True)
            bar.update(1)
            if max_nonfinite_steps is not None and streak >= max_nonfinite_steps:
                raise NonFiniteLossError(
                    f"the loss or its gradient was not finite for {streak} consecutive steps "
                    f"(epoch {epoch}, batch {steps + skipped}); training stopped"
                )
            continue
        streak = 0
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
    return EpochStats(
        loss=mean,
        words=words,
        steps=steps,
        seconds=seconds,
        skipped=skipped,
        interrupted=interrupted,
        loss_sum=loss_sum,
        nonfinite=nonfinite,
        nonfinite_streak=streak,
        bad_images=bad,
    )


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
