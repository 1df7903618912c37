"""Run state: what a training checkpoint holds beyond the model, written and read back.

A training checkpoint (:mod:`captioning.checkpoint` format) also carries ``trainer_state``
(epochs and optimizer steps done, best monitored value, batches done in an interrupted epoch and
that epoch's partial sums), ``sampler`` (seed, epoch, items skipped), ``loader_generator`` (the
training loader's generator at the start of the epoch, which seeds its workers), ``scaler``
(float16 loss scaling) and ``rng_per_rank``. Restoring all of it makes a resumed run continue
with exactly the batches, augmentations, dropout masks and learning rates of an uninterrupted
one, mid-epoch too. Finding and checking the checkpoint to resume: :mod:`captioning.training.resume`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from captioning.checkpoint import get_rng_state, save_checkpoint
from captioning.distributed import DistContext, gather_objects
from captioning.errors import CaptioningError, one_line
from captioning.training.epoch_stats import EpochStats

__all__ = ["RunState", "restore_state", "save_run_checkpoints"]


@dataclass
class RunState:
    """Where a run stands.

    Attributes:
        epoch: epochs completed.
        step: optimizer steps taken.
        best: best monitored validation value so far.
        best_epoch: the epoch that reached it (None: none yet, or an older checkpoint).
        batch: batches already done of epoch ``epoch + 1`` (an interrupted epoch).
        partial: that epoch's partial sums (:meth:`~captioning.training.epoch_stats.EpochStats.partial`),
            or None.
        rng: this rank's random generator states to restore, or None (a fresh run).
        sampler: the training sampler's saved state, or None.
        loader_generator: the training loader generator's state at the start of the
            interrupted epoch, or None.
    """

    epoch: int = 0
    step: int = 0
    best: float = -float("inf")
    best_epoch: int | None = None
    batch: int = 0
    partial: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    sampler: dict[str, int] | None = None
    loader_generator: torch.Tensor | None = None


def restore_state(
    ckpt: Mapping[str, Any] | None,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    ctx: DistContext,
    monitor: str,
) -> RunState:
    """Load optimizer, scheduler and scaler states; return where the run stands."""
    if ckpt is None:
        return RunState()
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler"):
            scheduler.load_state_dict(ckpt["scheduler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        detail = one_line(exc, 160)
        raise CaptioningError(
            f"trainer.resume: the checkpoint's optimizer/schedule state does not fit this run's "
            f"optim settings ({detail}); resume with the optim config the run was trained with"
        ) from None
    state = ckpt.get("trainer_state") or {}
    per_rank = ckpt.get("rng_per_rank") or []
    return RunState(
        epoch=int(ckpt["epoch"]),
        step=int(ckpt["step"]),
        best=float(state.get("best", ckpt["metrics"].get(f"best_{monitor}", -float("inf")))),
        best_epoch=state.get("best_epoch"),
        batch=int(state.get("batch", 0)),
        partial=state.get("partial"),
        rng=per_rank[ctx.rank] if len(per_rank) == ctx.world_size else ckpt["rng"],
        sampler=ckpt.get("sampler"),
        loader_generator=ckpt.get("loader_generator"),
    )


def _state_payload(
    state: RunState, partial: EpochStats | None, loader: DataLoader, scaler: Any
) -> dict[str, Any]:
    """What a checkpoint needs beyond model and optimizer to continue exactly."""
    batch, part = 0, None
    if partial is not None:
        batch, part = partial.steps + partial.skipped, partial.partial()
    return {
        "trainer_state": {
            "epoch": state.epoch,
            "step": state.step,
            "best": state.best,
            "best_epoch": state.best_epoch,
            "batch": batch,
            "partial": part,
        },
        "sampler": loader.sampler.state_dict(),
        "loader_generator": state.loader_generator,
        "scaler": scaler.state_dict() if scaler is not None else None,
    }


def save_run_checkpoints(
    run_dir: Path,
    names: Sequence[str],
    *,
    ctx: DistContext,
    model: nn.Module,
    config: dict[str, Any],
    vocab: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: RunState,
    loader: DataLoader,
    scaler: Any = None,
    partial: EpochStats | None = None,
    metrics: dict[str, float] | None = None,
) -> None:
    """Write ``checkpoints/<name>`` for each name on rank 0 (every rank takes part: the RNG
    states of all ranks are gathered)."""
    rng = gather_objects(get_rng_state())  # every rank's generators, in rank order
    if not ctx.is_main:
        return
    extra = {**_state_payload(state, partial, loader, scaler), "rng_per_rank": rng}
    for name in names:
        save_checkpoint(
            run_dir / "checkpoints" / name,
            model=model.state_dict(),
            config=config,
            vocab=vocab.to_list(),
            epoch=state.epoch,
            step=state.step,
            metrics=metrics,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            rng=rng[0],
            extra=extra,
        )
