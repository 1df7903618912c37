"""A run's set-up: everything :meth:`Trainer.fit` builds before its first epoch, in one object.

:func:`set_up_run` seeds and configures torch, reads the checkpoint to resume and the records, builds (or restores) the model and vocabulary, the training loader,
the optimizer, schedule, loss scaler and run state, and opens the run log, in an order that keeps
resumed runs exact (the random generators are restored last). :class:`RunSetup` holds the result
and writes the run's checkpoints.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from captioning.checkpoint import restore_model, set_rng_state
from captioning.data.captions import TokenizedCaptions
from captioning.data.records import ImageRecord
from captioning.devices import autocast_dtype, configure_torch
from captioning.distributed import DistContext
from captioning.models.caption_model import CaptionModel, build_model
from captioning.training import run_data
from captioning.training.config import RunConfig
from captioning.training.epoch_stats import EpochStats
from captioning.training.objectives import Objective, ObjectiveContext
from captioning.training.optim import build_optimization
from captioning.training.resume import load_resume
from captioning.training.run_log import RunLog
from captioning.training.state import RunState, restore_state, save_run_checkpoints
from captioning.vocab import Vocabulary

__all__ = ["RunSetup", "seed_everything", "set_up_run"]

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class RunSetup:
    """What a run trains with (:func:`set_up_run`).

    Attributes:
        run_dir: where the run writes.
        model: the model, on the run's device.
        vocab: its vocabulary.
        records: the ``train`` and ``val`` records.
        loader: the training loader.
        optimizer: the optimizer.
        scheduler: the learning-rate schedule.
        scaler: the float16 loss scaler, or None.
        amp: the autocast dtype, or None.
        state: where the run stands (a fresh run's, or the resumed checkpoint's).
        run_log: ``metrics.csv`` and TensorBoard (rank 0), or None.
        resumed: the run continues a checkpoint.
        plain_config: the config as checkpoints store it.
        ctx: this process's place in the run.
    """

    run_dir: Path
    model: CaptionModel
    vocab: Vocabulary
    records: dict[str, list[ImageRecord]]
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    amp: torch.dtype | None
    state: RunState
    run_log: RunLog | None
    resumed: bool
    plain_config: dict[str, Any]
    ctx: DistContext

    def save(
        self,
        names: Sequence[str],
        metrics: dict[str, float],
        partial: EpochStats | None = None,
    ) -> None:
        """Write ``checkpoints/<name>`` for each name (rank 0; every rank must call it)."""
        save_run_checkpoints(
            self.run_dir,
            names,
            ctx=self.ctx,
            model=self.model,
            config=self.plain_config,
            vocab=self.vocab,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            state=self.state,
            loader=self.loader,
            scaler=self.scaler,
            partial=partial,
            metrics=metrics,
        )


def set_up_run(
    config: RunConfig,
    *,
    run_dir: Path,
    resume: Path | None,
    device: torch.device,
    ctx: DistContext,
    objective: Objective,
    init: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunSetup | None:
    """Build everything a run needs before its first epoch.

    Args:
        config: the run's settings (a warm start's model config already in it).
        run_dir: where to write (:func:`captioning.training.resume.run_directory`).
        resume: the checkpoint to resume (:func:`captioning.training.resume.resume_source`).
        device: where to train.
        ctx: this process's place in the run (DDP).
        objective: the training objective (set up here with the vocabulary and records).
        init: a warm start's checkpoint (``trainer.init_from``), or None.
        should_stop: polled while a feature cache is built.

    Returns:
        The :class:`RunSetup`, or None when a feature-cache build was interrupted.
    """
    t = config.trainer
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    seed_everything(config.seed)
    configure_torch(
        device,
        threads=t.threads,
        deterministic=t.deterministic,
        cudnn_benchmark=t.cudnn_benchmark,
        tf32=t.tf32,
    )
    records = run_data.load_records(config.data, ctx)  # (a generated data set written first)
    config = run_data.resolve_feature_sizes(config)  # encoder=precomputed: from the files
    plain = config.to_dict()  # what checkpoints store
    ckpt = load_resume(resume, plain, run_dir) if resume is not None else None
    tokens = TokenizedCaptions(records["train"])  # once: the vocabulary and the encoded captions
    model, vocab = _model(config, tokens, ckpt, init)
    model.to(device)
    if t.channels_last:
        model.encoder.to(memory_format=torch.channels_last)
    if ctx.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        vocab.save(run_dir / "vocab.json")
    log.info(
        "data %s: %d train / %d val images; vocabulary %d words; model %.2fM parameters "
        "on %s x %d process(es)",
        config.data.name,
        len(records["train"]),
        len(records["val"]),
        len(vocab),
        sum(p.numel() for p in model.parameters()) / 1e6,
        device,
        ctx.world_size,
    )
    if ctx.world_size > 1:
        seed_everything(config.seed + ctx.rank)  # ranks draw different dropout masks
    attention = bool(getattr(model.decoder, "has_attention", False))
    objective.setup(
        ObjectiveContext(
            vocab,
            records["train"],
            device,
            config.decoding,
            attention=attention,
            train_tokens=tokens,
        )
    )
    loader = run_data.train_loader(
        config, model, records["train"], vocab, device, ctx, should_stop, tokens=tokens
    )
    if loader is None:  # the feature-cache build was interrupted (it resumes next time)
        return None
    steps = min(len(loader), t.max_train_batches or len(loader))
    optimizer, scheduler = build_optimization(
        model, config.optim, steps_per_epoch=steps, epochs=t.epochs
    )
    amp = autocast_dtype(t.amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    state = restore_state(ckpt, optimizer, scheduler, scaler, ctx, t.monitor)
    if state.sampler is not None:
        loader.sampler.load_state_dict(state.sampler)
    run_log = None
    if ctx.is_main:
        resumed = {"resume": ckpt is not None, "resume_epoch": state.epoch}
        run_log = RunLog(run_dir, tensorboard=t.tensorboard, **resumed)
    if ckpt is not None:
        set_rng_state(state.rng)  # last: building the model above drew random numbers
        log.info("resuming %s at epoch %d, batch %d", run_dir, state.epoch + 1, state.batch)
    return RunSetup(
        run_dir=run_dir,
        model=model,
        vocab=vocab,
        records=records,
        loader=loader,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        amp=amp,
        state=state,
        run_log=run_log,
        resumed=ckpt is not None,
        plain_config=plain,
        ctx=ctx,
    )


def _model(
    config: RunConfig,
    tokens: TokenizedCaptions,
    ckpt: dict[str, Any] | None,
    init: dict[str, Any] | None,
) -> tuple[CaptionModel, Vocabulary]:
    """The resumed checkpoint's model, a warm start's, or a new one with a new vocabulary."""
    t = config.trainer
    if ckpt is not None:
        return restore_model(ckpt, source=f"trainer.resume={t.resume}")
    if init is not None:
        return restore_model(init, source=f"trainer.init_from={t.init_from}")
    vocab = run_data.build_vocabulary(config.data, tokens)
    return build_model(config, vocab_size=len(vocab)), vocab
