"""Optimisation: the optimizer (encoder with its own learning rate) and the learning-rate
schedules (warmup, step decay, cosine), from the ``optim`` settings.

All schedules are pure functions of a step or epoch counter, so a resumed run recomputes exactly
the values an uninterrupted one would have used.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from captioning.errors import CaptioningError

__all__ = [
    "SCHEDULES",
    "build_optimization",
    "build_optimizer",
    "build_scheduler",
    "last_step_lr",
    "lr_factor",
]

SCHEDULES = ("none", "step", "cosine")
_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,  # Show, Attend and Tell on Flickr8k
    "sgd": torch.optim.SGD,
}


def build_optimizer(
    model: nn.Module,
    *,
    name: str = "adam",
    lr: float,
    encoder_lr: float | None = None,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """An optimizer with two parameter groups: ``decoder`` (everything but the encoder) at `lr`
    and ``encoder`` at `encoder_lr`.

    The encoder group holds all encoder parameters, frozen or not: frozen ones get no gradient
    and are skipped, and fine-tuning that starts later (``set_trainable``) needs no new
    optimizer, so checkpoints keep one layout for the whole run.

    Args:
        model: a CaptionModel (needs an ``encoder`` submodule).
        name: ``adam``, ``adamw``, ``rmsprop`` or ``sgd`` (with `momentum`).
        lr: learning rate of the decoder.
        encoder_lr: learning rate of the encoder when it learns (None: `lr`).
        weight_decay: L2 penalty (decoupled for ``adamw``).
        momentum: SGD momentum.

    Returns:
        The optimizer.
    """
    if name not in _OPTIMIZERS:
        raise CaptioningError(f"unknown optim.name {name!r}; choose one of {sorted(_OPTIMIZERS)}")
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    groups = [
        {
            "name": "decoder",
            "params": [p for p in model.parameters() if id(p) not in encoder_ids],
            "lr": float(lr),
        },
        {
            "name": "encoder",
            "params": list(model.encoder.parameters()),
            "lr": float(lr if encoder_lr is None else encoder_lr),
        },
    ]
    kwargs = {"weight_decay": float(weight_decay)}
    if name == "sgd":
        kwargs["momentum"] = float(momentum)
    return _OPTIMIZERS[name]([g for g in groups if g["params"]], **kwargs)


def lr_factor(
    step: int,
    *,
    schedule: str = "none",
    warmup_steps: int = 0,
    step_size: int = 1,
    gamma: float = 0.1,
    total_steps: int = 1,
) -> float:
    """The learning-rate multiplier after `step` optimizer steps.

    * warmup: ``(step + 1) / warmup_steps`` for the first `warmup_steps` steps (linear), times
    * ``none``: 1;
    * ``step``: ``gamma ** (step // step_size)`` (the papers' "decay by gamma every k epochs",
      with `step_size` given in steps);
    * ``cosine``: ``0.5 * (1 + cos(pi * p))`` with ``p`` the fraction of the steps after warmup
      done (from 1 down to 0 at `total_steps`).

    Args:
        step: optimizer steps taken so far.
        schedule: ``none``, ``step`` or ``cosine``.
        warmup_steps: linear warmup length (0: none).
        step_size: steps between decays (``step``).
        gamma: decay factor (``step``).
        total_steps: length of the run (``cosine``).

    Returns:
        The multiplier of the base learning rates.
    """
    if schedule not in SCHEDULES:
        raise CaptioningError(f"unknown optim.schedule {schedule!r}; choose one of {SCHEDULES}")
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "step":
        return warm * gamma ** (step // max(step_size, 1))
    if schedule == "cosine":
        done = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(max(done, 0.0), 1.0)))
    return warm


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    schedule: str = "none",
    warmup_steps: int = 0,
    step_size_epochs: int = 3,
    gamma: float = 0.8,
    steps_per_epoch: int = 1,
    epochs: int = 1,
) -> LambdaLR:
    """A per-optimizer-step scheduler applying :func:`lr_factor` to every parameter group.

    Args:
        optimizer: the optimizer.
        schedule: ``none``, ``step`` or ``cosine``.
        warmup_steps: linear warmup in optimizer steps.
        step_size_epochs: epochs between step decays.
        gamma: step decay factor.
        steps_per_epoch: optimizer steps per epoch.
        epochs: epochs of the run (the cosine schedule ends there).

    Returns:
        A ``LambdaLR``; call ``step()`` after each optimizer step.
    """
    lr_factor(0, schedule=schedule)  # validates the name before training starts
    step_size = max(int(step_size_epochs), 1) * max(int(steps_per_epoch), 1)
    total = max(int(steps_per_epoch), 1) * max(int(epochs), 1)

    def factor(step: int) -> float:
        return lr_factor(
            step,
            schedule=schedule,
            warmup_steps=int(warmup_steps),
            step_size=step_size,
            gamma=float(gamma),
            total_steps=total,
        )

    return LambdaLR(optimizer, factor)


def build_optimization(
    model: nn.Module, optim: Any, *, steps_per_epoch: int, epochs: int
) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """The optimizer and its per-step schedule as the ``optim`` settings say.

    Args:
        model: the CaptionModel.
        optim: the ``optim`` settings (:class:`~captioning.training.config.OptimConfig`).
        steps_per_epoch: optimizer steps per epoch.
        epochs: epochs of the run.

    Returns:
        (optimizer, scheduler).
    """
    momentum = {"momentum": optim.momentum} if optim.momentum is not None else {}
    optimizer = build_optimizer(
        model,
        name=optim.name,
        lr=optim.lr,
        encoder_lr=optim.encoder_lr,
        weight_decay=optim.weight_decay,
        **momentum,
    )
    scheduler = build_scheduler(
        optimizer,
        schedule=optim.schedule,
        warmup_steps=optim.warmup_steps,
        step_size_epochs=optim.step_size,
        gamma=optim.gamma,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
    )
    return optimizer, scheduler


def last_step_lr(scheduler: LambdaLR) -> float:
    """The decoder's learning rate at the last optimizer step taken (at the first step before
    any): what an epoch logs as ``lr``. (``get_last_lr()`` is the *next* step's rate, 0 after
    the last step of a cosine schedule.)"""
    step = max(scheduler.last_epoch - 1, 0)
    return scheduler.base_lrs[0] * scheduler.lr_lambdas[0](step)
