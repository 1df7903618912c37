"""Typed training settings: the dataclasses that ``conf/train.yaml`` and its groups fill.

Every default is written once, in ``conf/`` (``conf/base_trainer.yaml``, ``conf/base_data.yaml``,
``conf/optim/adam.yaml``, ...): the dataclasses declare which keys exist, their types and their
valid ranges (:mod:`captioning.settings`), and :func:`parse_config` turns a composed config
(hydra's, or any nested mapping) into a :class:`RunConfig`. A misspelt key, a wrong type or a
value out of range is one :class:`~captioning.errors.CaptioningError` line naming the key,
before any data is loaded.

The model parts (``encoder``, ``decoder``) and the ``objective`` are ``_target_`` nodes, typed as
:class:`~captioning.targets.EncoderSettings`, :class:`~captioning.targets.DecoderSettings` and
:class:`~captioning.training.objectives.ObjectiveSettings`: a model part's keys are its builder's
keyword arguments, checked against its signature and type hints; an objective's keys fill its
settings dataclass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from captioning.data.config import DataConfig
from captioning.decoding.settings import DecodingSettings
from captioning.errors import CaptioningError
from captioning.models.precomputed import TARGET as PRECOMPUTED
from captioning.settings import bounded, parse_settings
from captioning.targets import DecoderSettings, EncoderSettings
from captioning.training.objectives.base import ObjectiveSettings

__all__ = [
    "RENAMED",
    "VALIDATION_METRICS",
    "DataConfig",
    "OptimConfig",
    "RunConfig",
    "TrainerConfig",
    "parse_config",
]

#: Keys that moved; an old key is refused with one line naming the new one.
RENAMED = {
    "trainer.finetune_encoder_after": "optim.finetune_encoder_after",
    "trainer.scheduled_sampling": "objective.scheduled_sampling",
    "optim.label_smoothing": "objective.label_smoothing",
}
#: What validation reports (official BLEU and CIDEr, nltk's BLEU): the choices of trainer.monitor.
VALIDATION_METRICS = (
    *(f"Bleu_{n}" for n in range(1, 5)),
    "CIDEr",
    *(f"nltk_Bleu_{n}" for n in range(1, 5)),
)


@dataclass(frozen=True)
class OptimConfig:
    """``optim``: optimizer, learning-rate schedule, clipping and encoder fine-tuning (conf/optim/)."""

    name: Literal["adam", "adamw", "rmsprop", "sgd"]
    lr: float = bounded(gt=0.0)
    encoder_lr: float | None = bounded(gt=0.0)
    weight_decay: float = bounded(ge=0.0)
    grad_clip: float | None = bounded(gt=0.0)
    schedule: Literal["none", "step", "cosine"]
    warmup_steps: int = bounded(ge=0)
    step_size: int = bounded(ge=1)
    gamma: float = bounded(gt=0.0, le=1.0)
    finetune_encoder_after: int | None = bounded(ge=0)
    momentum: float | None = field(default=None, metadata={"ge": 0.0})  # sgd only


@dataclass(frozen=True)
class TrainerConfig:
    """``trainer``: hardware, run length and run control (conf/trainer/, one shared base)."""

    device: str
    epochs: int = bounded(ge=1)
    batch_size: int = bounded(ge=1)
    eval_batch_size: int = bounded(ge=1)
    num_workers: int = bounded(ge=0)
    threads: int | None = bounded(ge=1)
    monitor: str
    early_stop_patience: int | None = bounded(ge=1)
    progress: bool
    test_after_training: bool
    max_train_batches: int | None = bounded(ge=1)
    tensorboard: bool
    max_nonfinite_steps: int | None = bounded(ge=1)
    resume: str | None
    init_from: str | None
    amp: Literal["auto", "bf16", "fp16", "none"]
    channels_last: bool
    compile: bool
    deterministic: bool
    cudnn_benchmark: bool
    tf32: bool
    distributed: bool
    dist_backend: str | None
    dist_timeout_minutes: float = bounded(gt=0.0)
    find_unused_parameters: bool
    # steps between the progress bar's loss updates, the only reads of the training statistics
    # from the device within an epoch (a default, so configs saved before it still parse)
    log_every: int = field(default=20, metadata={"ge": 1})


@dataclass(frozen=True)
class RunConfig:
    """A whole training run: what ``conf/train.yaml`` composes."""

    seed: int
    data: DataConfig
    encoder: EncoderSettings
    decoder: DecoderSettings
    optim: OptimConfig
    objective: ObjectiveSettings
    trainer: TrainerConfig
    decoding: DecodingSettings

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts (what checkpoints store as ``config``); the ``_target_`` nodes as
        the config gave them."""
        return {
            f.name: value.to_dict()
            if hasattr(value, "to_dict")
            else dataclasses.asdict(value)
            if dataclasses.is_dataclass(value)
            else value
            for f in dataclasses.fields(self)
            for value in (getattr(self, f.name),)
        }


def parse_config(config: Mapping[str, Any]) -> RunConfig:
    """Check a composed training config and return it typed.

    Args:
        config: the config as hydra composes ``conf/train.yaml`` (a DictConfig), or the same
            structure as plain nested dicts (e.g. a checkpoint's ``config``).

    Returns:
        The :class:`RunConfig`.

    Raises:
        CaptioningError: one line naming the first key that is unknown, missing, of the wrong
            type or out of range, or a model part / objective whose settings do not fit.
    """
    run = parse_settings(RunConfig, config, renamed=RENAMED)
    run.decoder.build(vocab_size=8, vector_dim=8, grid_dim=8)  # the decoder's own checks, on
    # a tiny copy (milliseconds)
    run.decoding.checked("decoding")
    if run.trainer.init_from and run.trainer.resume:
        raise CaptioningError(
            f"trainer.init_from={run.trainer.init_from} and trainer.resume={run.trainer.resume}: "
            "resume continues a run from its own checkpoint; drop one of them (e.g. "
            "trainer.init_from=null)"
        )
    precomputed = run.encoder.target == PRECOMPUTED
    if precomputed != run.data.features.enabled:
        raise CaptioningError(
            "encoder=precomputed needs data.features.att_dir (the pre-extracted features' folder)"
            if precomputed
            else f"data.features.att_dir={run.data.features.att_dir} is read only by "
            "encoder=precomputed; add encoder=precomputed, or set data.features.att_dir=null"
        )
    if run.trainer.monitor not in VALIDATION_METRICS:
        raise CaptioningError(
            f"trainer.monitor={run.trainer.monitor!r} is not a validation metric; choose one "
            f"of {', '.join(VALIDATION_METRICS)}"
        )
    if run.optim.finetune_encoder_after is not None and not run.encoder.trainable:
        raise CaptioningError(
            f"optim.finetune_encoder_after={run.optim.finetune_encoder_after} needs "
            "encoder.trainable=true (and optionally encoder.fine_tune_from); there is nothing "
            "to fine-tune"
        )
    return run
