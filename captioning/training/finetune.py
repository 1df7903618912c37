"""Encoder fine-tuning phases: a frozen encoder for the first epochs, then a learning one."""

from __future__ import annotations

import logging

from captioning.errors import CaptioningError
from captioning.models.caption_model import CaptionModel

__all__ = ["encoder_learns"]

log = logging.getLogger(__name__)


def encoder_learns(
    model: CaptionModel,
    epoch: int,
    *,
    trainable: bool,
    finetune_after: int | None,
    fine_tune_from: int | None = None,
) -> bool:
    """Whether the encoder learns in `epoch`, switching it on when its phase starts.

    With ``encoder.trainable=true`` and ``optim.finetune_encoder_after=N`` the encoder is frozen
    for epochs 1..N and learns (from block ``encoder.fine_tune_from`` on, at
    ``optim.encoder_lr``) from epoch N+1. Without ``finetune_after`` it learns throughout when
    ``trainable``, never otherwise.

    Args:
        model: the CaptionModel.
        epoch: the epoch about to run (1-based).
        trainable: ``encoder.trainable``.
        finetune_after: ``optim.finetune_encoder_after`` (None: no phases).
        fine_tune_from: ``encoder.fine_tune_from`` (None: every block).

    Returns:
        Whether the encoder learns in this epoch.
    """
    if finetune_after is None or not trainable:
        return trainable
    if not hasattr(model.encoder, "set_trainable"):
        raise CaptioningError("optim.finetune_encoder_after needs an encoder with set_trainable")
    learns = epoch > finetune_after
    model.encoder.set_trainable(learns, fine_tune_from if learns else None)
    if learns and epoch == finetune_after + 1:
        log.info("epoch %d: encoder fine-tuning starts (from block %s)", epoch, fine_tune_from or 1)
    return learns
