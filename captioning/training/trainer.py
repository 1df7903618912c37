"""The :class:`Trainer`: one training run, from a config to scored checkpoints.

One class: the public API (``fit``, ``evaluate``, ``test``) and the steps of ``fit``, each a
screen or less. What a run builds first is :mod:`captioning.training.setup`, its epoch loop
:func:`captioning.training.loop.build_loop`, its scoring :mod:`captioning.training.run_eval`,
and what a signal saves :mod:`captioning.training.signals`.

    from captioning.training import Trainer
    summary = Trainer.from_config(cfg, run_dir="outputs/my-run").fit()

``fit()`` loads the data and builds the model, then runs epochs (:class:`TrainLoop`), validates
after each one, writes ``checkpoints/last.pt`` and ``checkpoints/best.pt`` (by
``trainer.monitor``), stops early after ``trainer.early_stop_patience`` epochs without
improvement, turns SIGINT/SIGTERM at any phase into a resumable ``last.pt``
(:mod:`~captioning.training.signals`), and finally scores the best
checkpoint on the test split (:meth:`Trainer.test`). The run directory receives ``vocab.json``,
``metrics.csv``, TensorBoard curves and ``test_scores.json``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from captioning.checkpoint import get_rng_state, load_checkpoint, restore_model, set_rng_state
from captioning.data.loader import start_epoch
from captioning.devices import resolve_device
from captioning.distributed import (
    DistContext,
    cleanup_distributed,
    gather_objects,
    init_distributed,
)
from captioning.errors import CaptioningError
from captioning.evaluation import VALIDATION_SCORERS, Evaluation
from captioning.models.caption_model import CaptionModel
from captioning.training import run_data
from captioning.training.config import RunConfig, parse_config
from captioning.training.epoch_stats import (
    EpochStats,
    NonFiniteLossError,
    check_finite,
    merge_stats,
)
from captioning.training.finetune import encoder_learns
from captioning.training.loop import TrainLoop, build_loop
from captioning.training.objectives import Objective, build_objective
from captioning.training.optim import last_step_lr
from captioning.training.resume import resume_source, run_directory
from captioning.training.run_eval import evaluate_model, score_test_split
from captioning.training.run_log import epoch_row, log_epoch
from captioning.training.setup import RunSetup, seed_everything, set_up_run
from captioning.training.signals import Interrupted, StopOnSignal, save_interrupted, stop_name
from captioning.training.warm_start import warm_start

__all__ = ["Trainer", "seed_everything"]

log = logging.getLogger(__name__)


class Trainer:
    """One training run.

    A warm start (``trainer.init_from``) is resolved here, once: the run's config holds the
    checkpoint's model settings from the start and is never replaced during the run.

    Args:
        config: the run's settings (see :func:`captioning.training.config.parse_config`).
        run_dir: where the run writes (default ``outputs/DATE/TIME``; with ``trainer.resume``
            of a run directory: that directory).
        objective: the training objective (default: the one ``config.objective`` names).
        should_stop: test hook ``should_stop(epoch, batches_done) -> bool``, polled before each
            batch; ``True`` stops training like a SIGTERM does.
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        run_dir: str | Path | None = None,
        objective: Objective | None = None,
        should_stop: Callable[[int, int], bool] | None = None,
    ) -> None:
        self._init = None  # a warm start's checkpoint, until fit() builds its model
        if config.trainer.init_from:  # the model config is the checkpoint's, for the whole run
            self._init, config = warm_start(config)
        # the data folder as an absolute path, so the run's checkpoints find it from anywhere
        root = str(Path(config.data.root).resolve())
        self.config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=root))
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.objective = objective if objective is not None else build_objective(config.objective)
        self.should_stop = should_stop
        self.device = resolve_device(config.trainer.device, setting="trainer.device")
        self.ctx = DistContext()
        self.model: CaptionModel | None = None
        self.vocab = None
        self.history: list[dict[str, float]] = []

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | RunConfig, **kwargs: Any) -> Trainer:
        """A trainer for a composed config (checked first: one error line per mistake)."""
        run = config if isinstance(config, RunConfig) else parse_config(config)
        return cls(run, **kwargs)

    # -- the run -------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train, validate and checkpoint every epoch, then test the best checkpoint.

        Returns:
            ``run_dir``, ``best`` (monitored value), ``history`` (per epoch), ``interrupted``
            (None, or what stopped the run: a signal's name or ``"stop requested"``),
            ``phase`` (where a signal stopped it: ``"feature cache"``, ``"set-up"``,
            ``"training"``, ``"validation"``, ``"end of epoch"`` or ``"test"``), and after a
            complete run ``test`` (scores) and ``examples`` (a few test captions). What
            finished is saved in every case; ``trainer.resume=run_dir`` continues (a
            validation or test that was cut short is run again).
        """
        t = self.config.trainer
        if t.distributed:
            self.ctx = init_distributed(
                self.device.type, backend=t.dist_backend, timeout_minutes=t.dist_timeout_minutes
            )
            if self.device.type == "cuda":
                self.device = torch.device("cuda", self.ctx.local_rank)
        try:
            with StopOnSignal() as stop:
                return self._fit(stop)
        finally:
            cleanup_distributed()

    def _fit(self, stop: StopOnSignal) -> dict[str, Any]:
        t = self.config.trainer
        resume = resume_source(t.resume)
        self.run_dir = run_directory(self.run_dir, resume, self.ctx)
        run = set_up_run(
            self.config,
            run_dir=self.run_dir,
            resume=resume[0] if resume is not None else None,
            device=self.device,
            ctx=self.ctx,
            objective=self.objective,
            init=self._init,
            should_stop=lambda: stop.signum is not None,
        )
        if run is None:  # the feature-cache build was interrupted (it resumes next time)
            return self._summary(-float("inf"), stop_name(stop.signum), "feature cache")
        self._init = None  # (its weights are in the model now)
        self.model, self.vocab = run.model, run.vocab
        self.history = list(run.run_log.rows) if run.run_log is not None else []
        interrupted, phase, loop = None, None, None
        first = run.state.epoch + 1
        streak = int((run.state.partial or {}).get("nonfinite_streak", 0))
        for epoch in range(first, t.epochs + 1):
            learns = encoder_learns(
                run.model,
                epoch,
                trainable=self.config.encoder.trainable,
                finetune_after=self.config.optim.finetune_encoder_after,
                fine_tune_from=self.config.encoder.fine_tune_from,
            )
            if learns != phase:  # (re)wrap for DDP / compile when the trainable set changes
                phase, loop = learns, build_loop(self.config, run, self.objective, self.device)
            stop.phase = "training"
            stats = self._train_epoch(run, loop, epoch, epoch == first, streak, stop)
            streak = stats.nonfinite_streak
            if stats.interrupted:
                interrupted = save_interrupted(run, epoch, stats, stop, t.monitor)
                break
            rng = get_rng_state()  # (validation may draw loader seeds: a resume re-runs it)
            try:
                val = self._at_once(stop, "validation", lambda: self._validate(run))
            except Interrupted:
                set_rng_state(rng)
                interrupted = save_interrupted(run, epoch, stats, stop, t.monitor)
                break
            stop.phase = "end of epoch"
            interrupted, done = self._end_epoch(run, epoch, stats, val.scores, stop)
            if interrupted is not None:  # (the epoch is complete in last.pt)
                stop.stopped_in = "end of epoch"
            if done:
                break
        if run.run_log is not None:
            run.run_log.close()
        summary = self._summary(run.state.best, interrupted, stop.stopped_in)
        if interrupted is None and t.test_after_training:
            try:
                summary.update(self._at_once(stop, "test", self.test))
            except Interrupted:
                summary.update(interrupted=stop_name(stop.signum), phase="test")
        return summary

    def _at_once(self, stop: StopOnSignal, phase: str, work: Callable[[], Any]) -> Any:
        """``work()`` interrupted at once by a signal (one process: several must stop together,
        after it; :meth:`StopOnSignal.run_at_once`)."""
        return stop.run_at_once(phase, work, enabled=self.ctx.world_size == 1)

    def _validate(self, run: RunSetup) -> Evaluation:
        """The epoch's validation: scores and ``loss`` (the references' cross-entropy)."""
        return evaluate_model(
            run.model,
            run.vocab,
            run.records["val"],
            self.config,
            device=self.device,
            ctx=self.ctx,
            split="val",
            loss=True,
        )

    def _end_epoch(
        self,
        run: RunSetup,
        epoch: int,
        stats: EpochStats,
        scores: dict[str, float],
        stop: StopOnSignal,
    ) -> tuple[str | None, bool]:
        """Log the validation `scores`, checkpoint; then whether the run stops (a signal on any
        rank, or early stopping).

        Returns:
            (what interrupted the run or None, whether to stop).
        """
        t, state = self.config.trainer, run.state
        improved = scores[t.monitor] > state.best
        state.epoch, state.best = epoch, max(state.best, scores[t.monitor])
        state.best_epoch = epoch if improved else state.best_epoch
        row = epoch_row(epoch, state.step, stats, scores, last_step_lr(run.scheduler))
        log_epoch(row, stats, t.monitor, self.objective.unit, improved)
        if run.run_log is not None:
            run.run_log.log_epoch(row)
        self.history.append(row)
        names = ("last.pt", "best.pt") if improved else ("last.pt",)
        run.save(names, metrics={**scores, f"best_{t.monitor}": state.best})
        signals = [s for s in gather_objects(stop.signum) if s is not None]  # any rank's
        if signals:
            return stop_name(signals[0]), True
        waited = epoch - (state.best_epoch or epoch)
        if t.early_stop_patience and waited >= t.early_stop_patience and epoch < t.epochs:
            log.info("early stop: no better %s for %d epochs", t.monitor, waited)
            return None, True
        return None, False

    def _train_epoch(
        self,
        run: RunSetup,
        loop: TrainLoop,
        epoch: int,
        resumed: bool,
        streak: int,
        stop: StopOnSignal,
    ) -> EpochStats:
        """One epoch, resumed part-way when `resumed` and the run state says so."""
        t, state, loader = self.config.trainer, run.state, run.loader
        skip = state.batch if resumed else 0
        start_epoch(loader, epoch, skip_batches=skip)
        if skip and state.loader_generator is not None:
            loader.generator.set_state(state.loader_generator)
        state.loader_generator = loader.generator.get_state()  # this epoch's start
        self.objective.start_epoch(epoch)
        total = len(loader) if not t.max_train_batches else max(t.max_train_batches - skip, 0)
        polls, hook = itertools.count(skip), self.should_stop

        def should_stop() -> bool:
            done = next(polls)
            return stop.signum is not None or bool(hook is not None and hook(epoch, done))

        try:
            stats = loop.run_epoch(
                itertools.islice(loader, total),
                epoch=epoch,
                total=total,
                should_stop=should_stop,
                nonfinite_streak=streak,
            )
        except NonFiniteLossError as exc:
            last = run.run_dir / "checkpoints" / "last.pt"
            kept = f"{last} (epoch {epoch - 1}) is kept" if last.is_file() else "nothing saved"
            raise CaptioningError(
                f"{exc} (trainer.max_nonfinite_steps={t.max_nonfinite_steps}); {kept}: check "
                f"the data and resume with trainer.resume={run.run_dir}, or start a new run "
                f"from its weights with a lower optim.lr or an optim.grad_clip "
                f"(trainer.init_from={last})"
            ) from None
        check_finite(run.model, epoch, run.run_dir)
        state.step += stats.steps
        return merge_stats(state.partial if skip else None, stats)

    def _summary(self, best: float, interrupted: str | None, phase: str | None) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "best": best,
            "history": list(self.history),
            "interrupted": interrupted,
            "phase": phase if interrupted is not None else None,
        }

    # -- scoring -----------------------------------------------------------------------------

    def evaluate(
        self,
        split: str = "val",
        *,
        checkpoint: str | Path | None = None,
        metrics: tuple[str, ...] = VALIDATION_SCORERS,
    ) -> tuple[dict[str, float], dict[int, str]]:
        """Decode every image of `split` once (the run's decoding settings) and score it.

        Args:
            split: a split of the data config.
            checkpoint: a checkpoint (or run directory) to score; default: the model of this
                trainer after :meth:`fit`, else the run directory's ``best.pt``.
            metrics: official scorers to run.

        Returns:
            (scores, predictions by image id).
        """
        if checkpoint is not None or self.model is None:
            source = checkpoint or self.run_dir
            if source is None:
                raise CaptioningError("nothing to evaluate: call fit() or pass checkpoint=")
            self.model, self.vocab = restore_model(load_checkpoint(source), source=source)
            self.model.to(self.device)
        records = run_data.load_records(self.config.data, self.ctx, (split,))[split]
        evaluation = evaluate_model(
            self.model,
            self.vocab,
            records,
            self.config,
            device=self.device,
            ctx=self.ctx,
            split=split,
            metrics=metrics,
        )
        return evaluation.scores, evaluation.predictions

    def test(self) -> dict[str, Any]:
        """Score ``checkpoints/best.pt`` on the test split with the official metrics (and the
        grounded ones where the data set has ground truth).

        Writes ``test_scores.json`` and ``test_results.json`` into the run directory.

        Returns:
            ``test`` (scores) and ``examples`` (image path and caption of a few test images).
        """
        if self.run_dir is None:
            raise CaptioningError("Trainer.test() needs run_dir (the run whose best.pt to score)")
        return score_test_split(self.run_dir, self.config, device=self.device, ctx=self.ctx)
