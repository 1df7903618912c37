"""Warm start (``trainer.init_from``): a new run that starts from a trained model's weights.

The usual way to start self-critical training: ``trainer.init_from=outputs/demo`` (a run
directory: its ``checkpoints/best.pt``) or a checkpoint file. The new run takes from the
checkpoint the weights, the vocabulary and the model config (its ``encoder`` and ``decoder``
nodes replace the run's, so the new run's checkpoints describe the model they hold); everything
else is the new run's own: data, objective, a fresh optimizer and schedule, epochs counted from 1,
a new run directory. Unlike ``trainer.resume``, which continues an interrupted run exactly.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from captioning.checkpoint import load_checkpoint
from captioning.errors import CaptioningError
from captioning.targets import DecoderSettings, EncoderSettings
from captioning.training.config import RunConfig
from captioning.training.resume import config_differences

__all__ = ["init_source", "warm_start"]

log = logging.getLogger(__name__)


def init_source(value: str | Path) -> Path:
    """``trainer.init_from`` -> the checkpoint file (a run directory's ``checkpoints/best.pt``)."""
    path = Path(str(value))
    if path.is_dir():
        best = path / "checkpoints" / "best.pt"
        if not best.is_file():
            raise CaptioningError(
                f"trainer.init_from={path}: no checkpoints/best.pt in that folder (train it first, "
                "or name a checkpoint file)"
            )
        return best
    if not path.is_file():
        raise CaptioningError(f"trainer.init_from={path}: no such run directory or checkpoint")
    return path


def warm_start(config: RunConfig) -> tuple[dict[str, Any], RunConfig]:
    """Read ``trainer.init_from`` and give the run the checkpoint's model config.

    Args:
        config: the run's settings, with ``trainer.init_from`` set.

    Returns:
        The checkpoint (rebuild its model with :func:`captioning.checkpoint.restore_model`) and
        the run config with the checkpoint's ``encoder`` and ``decoder`` nodes.

    Raises:
        CaptioningError: the checkpoint is missing, unreadable or has no model config
            (``parse_config`` refuses ``trainer.init_from`` together with ``trainer.resume``).
    """
    path = init_source(config.trainer.init_from)
    ckpt = load_checkpoint(path)
    model = {part: ckpt["config"].get(part) for part in ("encoder", "decoder")}
    for part, node in model.items():
        if not isinstance(node, dict) or "_target_" not in node:
            raise CaptioningError(
                f"trainer.init_from={path}: the checkpoint's config has no {part} section"
            )
        diff = config_differences(
            getattr(config, part).to_dict(), node, part, labels=("configured", "in the checkpoint")
        )
        if diff:
            log.warning(
                "trainer.init_from: the model is the checkpoint's; configured %s settings "
                "ignored (%s)",
                part,
                "; ".join(diff[:3]),
            )
    data = ckpt["config"].get("data") or {}
    if data.get("name") not in (None, config.data.name):
        log.warning(
            "trainer.init_from: %s was trained on %s data, this run learns from %s",
            path,
            data.get("name"),
            config.data.name,
        )
    log.info(
        "starting from %s (epoch %s, %d words): its weights, vocabulary and model config; "
        "a fresh optimizer",
        path,
        ckpt["epoch"],
        len(ckpt["vocab"]),
    )
    typed = {
        "encoder": EncoderSettings(model["encoder"]),
        "decoder": DecoderSettings(model["decoder"]),
    }
    return ckpt, dataclasses.replace(config, **typed)
