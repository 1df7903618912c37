"""The epoch loop: one pass over the training batches, with the faults it survives.

:class:`TrainLoop` holds what stays fixed for a run (model, step module, optimizer, schedule,
precision, limits) and :meth:`TrainLoop.run_epoch` runs one epoch. The loss of a step is what
the objective returns (:class:`~captioning.training.objectives.StepLoss`): a sum over the
step's units divided by their number. Under DDP each rank divides its sum by the *global*
count and multiplies by the world size, so DDP's gradient averaging yields exactly the gradient
of one process holding all ranks' batches, whatever each rank's count.

Host synchronisations (a GPU stall each): a step reads one value back, whether to update (the
gradient norm and the loss are checked on the device, and the word count and the loss's
finiteness travel in one all-reduce of a stacked tensor under DDP); the summed loss, words and
logs stay on the device (:class:`~captioning.training.epoch_stats.StepSums`) and are read every
``log_every`` steps for the progress bar and once at the epoch's end. Under DDP, polling
``should_stop`` adds one all-reduce and read per step; float16's ``GradScaler.step`` reads its
own overflow flag; self-critical steps add their sampling's reads
(:mod:`captioning.training.objectives.scst`).

Faults do not end the epoch: a step whose loss or gradient norm is not finite is skipped (no
update; counted in ``nonfinite``), and images the loader could not read (``batch.skipped``) are
logged, left out and counted in ``bad_images``. Only ``max_nonfinite_steps`` consecutive
non-finite steps (:class:`NonFiniteLossError`) or more than ``max_bad_images`` unreadable images
(:class:`~captioning.errors.CaptioningError`) stop training.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from captioning.data.loader import CaptionBatch
from captioning.distributed import DistContext, all_reduce_sum, is_distributed
from captioning.errors import CaptioningError
from captioning.training.epoch_stats import EpochStats, NonFiniteLossError, StepSums
from captioning.training.objectives import CrossEntropyObjective, Objective, TrainStep
from captioning.training.run_data import bad_image_budget

if TYPE_CHECKING:
    from captioning.training.config import RunConfig
    from captioning.training.setup import RunSetup

__all__ = ["TrainLoop", "build_loop", "wrap_step"]

log = logging.getLogger(__name__)


def wrap_step(
    model: nn.Module,
    objective: Objective,
    device: torch.device,
    ctx: DistContext,
    *,
    compile: bool = False,
    unused: bool = False,
) -> nn.Module:
    """The training step as one module, in ``DistributedDataParallel`` (several processes) and
    ``torch.compile`` (``compile``); `unused`: DDP's ``find_unused_parameters``."""
    module: nn.Module = TrainStep(model, objective)
    if ctx.world_size > 1:
        module = nn.parallel.DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=unused,
        )
    if compile:
        module = torch.compile(module)
    return module


def _unusable(batch: CaptionBatch, batch_norm_1d: bool) -> str | None:
    """Why a batch cannot be trained on (None: it can)."""
    if batch.captions.size(0) == 0:
        return "no image of the batch could be read"
    if batch_norm_1d and batch.images is not None and batch.images.size(0) == 1:
        return "a single image is left, and the model's BatchNorm1d layers need two or more"
    return None


def _to_device(batch: CaptionBatch, device: torch.device, channels_last: bool) -> CaptionBatch:
    """The batch with images (or cached features, as float32) and captions on `device`;
    ``lengths`` stay on the CPU (packing needs them there)."""
    images, features = batch.images, batch.features
    if features is not None:
        features = features.to(device, non_blocking=True)
    else:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
    return batch._replace(
        images=images,
        features=features,
        captions=batch.captions.to(device, non_blocking=True),
        image_index=batch.image_index.to(device, non_blocking=True),
    )


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is set on any rank (so that all ranks stop at the same batch)."""
    if not is_distributed():
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0)


class TrainLoop:
    """Runs training epochs of a model with an objective.

    Args:
        model: the CaptionModel (train mode is set each epoch; its parameters are clipped).
        optimizer: updates the parameters that get a gradient.
        device: where to compute.
        objective: what to minimise (None: plain cross-entropy).
        step: the module to call instead of ``TrainStep(model, objective)``, e.g. that module
            wrapped in ``DistributedDataParallel`` or ``torch.compile``.
        scheduler: stepped after every optimizer step (per-step learning-rate schedule).
        scaler: gradient scaler for float16 mixed precision.
        autocast_dtype: mixed precision (``torch.bfloat16`` / ``torch.float16``; None: off).
        grad_clip: clip the global gradient norm to this (None: no clipping).
        channels_last: feed the encoder channels-last images.
        progress: show a tqdm bar.
        log_every: steps between the bar's loss updates: the statistics stay on the device and
            are read back (one host synchronisation) only then, and once at the epoch's end.
        max_bad_images: most unreadable images allowed per epoch (None: no limit).
        max_nonfinite_steps: stop after this many consecutive non-finite steps (None: never).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        objective: Objective | None = None,
        step: nn.Module | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        scaler: torch.amp.GradScaler | None = None,
        autocast_dtype: torch.dtype | None = None,
        grad_clip: float | None = None,
        channels_last: bool = False,
        progress: bool = False,
        log_every: int = 20,
        max_bad_images: int | None = None,
        max_nonfinite_steps: int | None = None,
    ) -> None:
        self.model, self.optimizer, self.device = model, optimizer, device
        self.objective = objective or CrossEntropyObjective()
        self.step = step if step is not None else TrainStep(model, self.objective)
        self.scheduler, self.scaler, self.autocast_dtype = scheduler, scaler, autocast_dtype
        self.grad_clip, self.channels_last, self.progress = grad_clip, channels_last, progress
        self.log_every = log_every
        self.max_bad_images, self.max_nonfinite_steps = max_bad_images, max_nonfinite_steps

    def _skip_unreadable(self, batch: CaptionBatch, epoch: int, bad: int) -> int:
        """Log the batch's unreadable images; return the epoch's new count, or raise over budget."""
        for item in batch.skipped:
            log.warning("epoch %d: skipped an unreadable training image: %s", epoch, item.reason)
        bad += len(batch.skipped)
        if self.max_bad_images is not None and bad > self.max_bad_images:
            raise CaptioningError(
                f"{bad} training images could not be read in epoch {epoch}, more than the "
                f"{self.max_bad_images} that data.max_bad_image_fraction allows (last: "
                f"{batch.skipped[-1].reason}); fix or remove the files, or raise "
                "data.max_bad_image_fraction"
            )
        return bad

    def _backward(self, loss: Tensor, params: list[Tensor]) -> Tensor:
        """Gradients of `loss`, unscaled and clipped; returns their global norm."""
        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).sum().backward()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        return nn.utils.clip_grad_norm_(params, self.grad_clip or float("inf"))

    def run_epoch(
        self,
        batches: Iterable[CaptionBatch],
        *,
        epoch: int = 0,
        total: int | None = None,
        should_stop: Callable[[], bool] | None = None,
        nonfinite_streak: int = 0,
    ) -> EpochStats:
        """One pass over `batches`.

        Args:
            batches: batches of images or cached features, with all their captions.
            epoch: shown in the progress bar and the log.
            total: number of batches, for the progress bar.
            should_stop: polled before each batch; ``True`` ends the epoch early.
            nonfinite_streak: consecutive non-finite steps at the end of the previous epoch.

        Returns:
            Mean loss per unit, counts, and the objective's logs averaged over steps (its
            summed logs, like the loss, over units).

        Raises:
            NonFiniteLossError: `max_nonfinite_steps` consecutive steps were not finite.
            CaptioningError: more than `max_bad_images` images could not be read.
        """
        world = dist.get_world_size() if is_distributed() else 1
        device, scaler = self.device, self.scaler
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        steps, skipped, start = 0, 0, time.perf_counter()
        interrupted, nonfinite, streak, bad = False, 0, nonfinite_streak, 0
        sums = StepSums(self.objective.log_names, device)  # on the device, read per interval
        summed = set(self.objective.summed_logs)  # per unit, like the loss; others per step
        batch_norm_1d = any(
            isinstance(m, nn.BatchNorm1d) and m.training for m in self.model.modules()
        )
        bar = tqdm(
            total=total,
            desc=f"epoch {epoch}",
            disable=not self.progress,
            leave=False,
            dynamic_ncols=True,
        )
        batches = iter(batches)
        while True:
            if should_stop is not None and _any_rank(should_stop(), device):
                interrupted = True
                break
            batch = next(batches, None)
            if batch is None:
                break
            if batch.skipped:
                bad = self._skip_unreadable(batch, epoch, bad)
            unusable = _unusable(batch, batch_norm_1d)
            if unusable:
                if world > 1:
                    raise CaptioningError(
                        f"epoch {epoch}: {unusable} on this rank, so the ranks cannot take the "
                        "step together; fix or remove the unreadable images"
                    )
                log.warning("epoch %d: batch skipped: %s", epoch, unusable)
                skipped += 1
                bar.update(1)
                continue
            batch = _to_device(batch, device, self.channels_last)
            with torch.autocast(
                device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
            ):
                out = self.step(batch)
            # one collective per step: the word count and whether the loss is finite, stacked
            counts = all_reduce_sum(
                torch.stack([out.count.float(), torch.isfinite(out.total.detach()).float()])
            )  # (2,) global words, ranks with a finite loss
            loss = out.total * world / counts[0].clamp(min=1.0)  # scalar
            norm = self._backward(loss, params)
            # decided on the device; the norm of the (all-reduced) gradient is the same on every
            # rank and the loss flags are summed over ranks, so all ranks skip together
            loss_ok = counts[1] == world
            # the step's one host read: whether to update (GradScaler's .item() does the same)
            finite = bool(torch.isfinite(norm) & loss_ok)
            if scaler is not None:
                scaler.step(self.optimizer)  # skips the update itself when gradients are not finite
                scaler.update()
            elif finite:
                self.optimizer.step()
            if not finite:
                skipped, nonfinite = skipped + 1, nonfinite + 1
                # float16 loss scaling overflows now and then by design: only a non-finite loss
                # counts towards the streak there (a host read taken on this rare path only)
                streak += 1 if scaler is None or not bool(loss_ok) else 0
                log.warning(
                    "non-finite loss or gradient at epoch %d, batch %d: step skipped",
                    epoch,
                    steps + skipped,
                )
                self.optimizer.zero_grad(set_to_none=True)
                bar.update(1)
                if self.max_nonfinite_steps is not None and streak >= self.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"the loss or its gradient was not finite for {streak} consecutive steps "
                        f"(epoch {epoch}, batch {steps + skipped}); training stopped"
                    )
                continue
            streak = 0
            if self.scheduler is not None:
                self.scheduler.step()
            sums.add(out)
            steps += 1
            bar.update(1)
            if self.progress and (steps == 1 or steps % self.log_every == 0):
                bar.set_postfix(**sums.shown(steps, summed))  # a host read per interval
        bar.close()
        totals = all_reduce_sum(sums.totals(steps)).tolist()  # over ranks; one read per epoch
        loss_sum, words, all_steps, log_totals = totals[0], int(totals[1]), totals[2], totals[3:]
        logs = dict(zip(self.objective.log_names, log_totals, strict=True))
        log_sums = {k: v for k, v in logs.items() if k in summed}
        extra = {
            k: (v / words if words else math.nan) if k in summed else v / max(all_steps, 1.0)
            for k, v in logs.items()
        }
        return EpochStats(
            loss=loss_sum / words if words else math.nan,
            words=words,
            steps=steps,
            seconds=time.perf_counter() - start,
            skipped=skipped,
            extra=extra,
            interrupted=interrupted,
            loss_sum=loss_sum,
            nonfinite=nonfinite,
            nonfinite_streak=streak,
            bad_images=bad,
            log_sums=log_sums,
        )


def build_loop(
    config: RunConfig, run: RunSetup, objective: Objective, device: torch.device
) -> TrainLoop:
    """The epoch loop of a run over its model as it trains now: the step wrapped for DDP /
    compile (:func:`wrap_step`), so it is built again when the trainable set changes."""
    t, ctx, model = config.trainer, run.ctx, run.model
    # attention decoders read the grid only: a learning encoder's vector layers (VGG fc6/fc7)
    # get no gradient, which DDP must be told about
    unused = t.find_unused_parameters or (
        bool(getattr(model.decoder, "has_attention", False))
        and any(p.requires_grad for p in model.encoder.parameters())
    )
    step = wrap_step(model, objective, device, ctx, compile=t.compile, unused=unused)
    return TrainLoop(
        model,
        run.optimizer,
        step=step,
        device=device,
        objective=objective,
        scheduler=run.scheduler,
        scaler=run.scaler,
        autocast_dtype=run.amp,
        grad_clip=config.optim.grad_clip,
        channels_last=t.channels_last,
        progress=t.progress and ctx.is_main,
        log_every=t.log_every,
        max_bad_images=bad_image_budget(config.data, len(run.loader.dataset) // ctx.world_size),
        max_nonfinite_steps=t.max_nonfinite_steps,
    )
