"""The :class:`Trainer`: one training run, from a config to scored checkpoints.

    from captioning.training import Trainer
    summary = Trainer.from_config(cfg, run_dir="outputs/my-run").fit()

``fit()`` loads the data and builds the model, then runs epochs (:class:`TrainLoop`), validates
after each one, writes ``checkpoints/last.pt`` and ``checkpoints/best.pt`` (by
``trainer.monitor``), stops early after ``trainer.early_stop_patience`` epochs without
improvement, turns SIGINT/SIGTERM into a resumable ``last.pt``, and finally scores the best
checkpoint on the test split (:meth:`Trainer.test`). The run directory receives ``vocab.json``,
``metrics.csv``, TensorBoard curves and ``test_scores.json``.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from captioning.checkpoint import load_checkpoint, restore_model, set_rng_state
from captioning.data.loader import build_train_loader, start_epoch
from captioning.devices import autocast_dtype, configure_torch, resolve_device
from captioning.distributed import (
    DistContext,
    broadcast_object,
    cleanup_distributed,
    gather_objects,
    init_distributed,
)
from captioning.errors import CaptioningError
from captioning.models.caption_model import CaptionModel, build_model
from captioning.tracking import RunLog
from captioning.training.config import RunConfig, parse_config
from captioning.training.datasets import (
    bad_image_budget,
    build_vocabulary,
    load_records,
    train_dataset,
)
from captioning.training.finetune import encoder_learns
from captioning.training.loop import NonFiniteLossError, TrainLoop
from captioning.training.objectives import Objective, ObjectiveContext, build_objective
from captioning.training.optim import build_optimizer, build_scheduler
from captioning.training.scoring import evaluate_split, test_checkpoint, wrap_step
from captioning.training.signals import StopOnSignal, stop_name
from captioning.training.state import (
    RunState,
    check_finite,
    check_writable,
    load_resume,
    merge_stats,
    restore_state,
    resume_source,
    save_run_checkpoints,
)

__all__ = ["Trainer", "seed_everything"]

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """One training run.

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
        self.config = config
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
            (None, or what stopped the run), and after a complete run ``test`` (scores) and
            ``examples`` (a few test captions).
        """
        trainer = self.config.trainer
        if trainer.distributed:
            self.ctx = init_distributed(
                self.device.type,
                backend=trainer.dist_backend,
                timeout_minutes=trainer.dist_timeout_minutes,
            )
            if self.device.type == "cuda":
                self.device = torch.device("cuda", self.ctx.local_rank)
        try:
            with StopOnSignal() as stop:
                return self._fit(stop)
        finally:
            cleanup_distributed()

    def _prepare(self) -> tuple[dict[str, Any] | None, dict[str, list]]:
        """Run directory, resume checkpoint, records, vocabulary and model."""
        cfg, ctx = self.config, self.ctx
        if not ctx.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        seed_everything(cfg.seed)
        t = cfg.trainer
        configure_torch(
            self.device,
            threads=t.threads,
            deterministic=t.deterministic,
            cudnn_benchmark=t.cudnn_benchmark,
            tf32=t.tf32,
        )
        resume = resume_source(t.resume)
        if resume is not None and resume[1] is not None:
            self.run_dir = resume[1]
        elif self.run_dir is None:
            self.run_dir = Path("outputs") / datetime.datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        self.run_dir = Path(broadcast_object(str(self.run_dir)))
        if ctx.is_main:  # before any long work
            where = "trainer.resume" if resume and resume[1] else "hydra.run.dir (run_dir)"
            check_writable(self.run_dir, where)
        ckpt = None
        if resume is not None:
            ckpt = load_resume(resume[0], cfg.to_dict(), self.run_dir)
        records = load_records(cfg.data, ctx)
        if ckpt is not None:
            self.model, self.vocab = restore_model(ckpt, source=f"trainer.resume={t.resume}")
        else:
            self.vocab = build_vocabulary(cfg.data, records["train"])
            self.model = build_model(cfg.to_dict(), vocab_size=len(self.vocab))
        self.model.to(self.device)
        if t.channels_last:
            self.model.encoder.to(memory_format=torch.channels_last)
        if ctx.is_main:
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            self.vocab.save(self.run_dir / "vocab.json")
        log.info(
            "data %s: %d train / %d val images; vocabulary %d words; model %.2fM parameters on "
            "%s%s",
            cfg.data.name,
            len(records["train"]),
            len(records["val"]),
            len(self.vocab),
            sum(p.numel() for p in self.model.parameters()) / 1e6,
            self.device,
            f" x {ctx.world_size} processes" if ctx.world_size > 1 else "",
        )
        if ctx.world_size > 1:
            seed_everything(cfg.seed + ctx.rank)  # ranks draw different dropout masks
        return ckpt, records

    def _fit(self, stop: StopOnSignal) -> dict[str, Any]:
        cfg, ctx, device = self.config, self.ctx, self.device
        t, o = cfg.trainer, cfg.optim
        ckpt, records = self._prepare()
        model, vocab, run_dir = self.model, self.vocab, self.run_dir
        decoding = {k: v for k, v in cfg.to_dict()["decoding"].items()}
        self.objective.setup(ObjectiveContext(vocab, records["train"], device, decoding))
        dataset = train_dataset(
            cfg.data,
            model,
            records["train"],
            vocab,
            encoder_config=cfg.encoder,
            seed=cfg.seed,
            fine_tuning=o.finetune_encoder_after is not None,
            device=device,
            ctx=ctx,
            batch_size=t.eval_batch_size,
            num_workers=t.num_workers,
            channels_last=t.channels_last,
            progress=t.progress,
            should_stop=lambda: stop.signum is not None,
        )
        if dataset is None:  # the feature-cache build was interrupted (it resumes next time)
            return self._summary(-float("inf"), stop_name(stop.signum))
        loader = build_train_loader(
            dataset,
            batch_size=t.batch_size,
            seed=cfg.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            num_workers=t.num_workers,
            pin_memory=device.type == "cuda",
        )
        optimizer = build_optimizer(
            model,
            name=o.name,
            lr=o.lr,
            encoder_lr=o.encoder_lr,
            weight_decay=o.weight_decay,
            **({"momentum": o.momentum} if o.momentum is not None else {}),
        )
        steps_per_epoch = min(len(loader), t.max_train_batches or len(loader))
        scheduler = build_scheduler(
            optimizer,
            schedule=o.schedule,
            warmup_steps=o.warmup_steps,
            step_size_epochs=o.step_size,
            gamma=o.gamma,
            steps_per_epoch=steps_per_epoch,
            epochs=t.epochs,
        )
        amp = autocast_dtype(t.amp, device)
        scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
        state = restore_state(ckpt, optimizer, scheduler, scaler, ctx, t.monitor)
        if state.sampler is not None:
            loader.sampler.load_state_dict(state.sampler)
        run_log = None
        if ctx.is_main:
            run_log = RunLog(
                run_dir,
                tensorboard=t.tensorboard,
                resume=ckpt is not None,
                resume_epoch=state.epoch,
            )
        self.history = list(run_log.rows) if run_log is not None else []
        if ckpt is not None:
            set_rng_state(state.rng)  # last: building the model above drew random numbers
            log.info(
                "resuming %s at epoch %d, batch %d (best %s %.4f)",
                run_dir,
                state.epoch + 1,
                state.batch,
                t.monitor,
                state.best,
            )
        saving = dict(
            ctx=ctx,
            model=model,
            config=cfg.to_dict(),
            vocab=vocab,
            optimizer=optimizer,
            scheduler=scheduler,
            loader=loader,
            scaler=scaler,
        )
        learns, loop, interrupted = None, None, None
        streak = int((state.partial or {}).get("nonfinite_streak", 0))
        first = state.epoch + 1
        for epoch in range(first, t.epochs + 1):
            phase = encoder_learns(
                model,
                epoch,
                trainable=bool(cfg.encoder.get("trainable", False)),
                finetune_after=o.finetune_encoder_after,
                fine_tune_from=cfg.encoder.get("fine_tune_from"),
            )
            if phase != learns:  # (re)wrap for DDP / compile when the trainable set changes
                learns = phase
                loop = TrainLoop(
                    model,
                    optimizer,
                    device=device,
                    objective=self.objective,
                    step=wrap_step(model, self.objective, t, device, ctx),
                    scheduler=scheduler,
                    scaler=scaler,
                    autocast_dtype=amp,
                    grad_clip=o.grad_clip,
                    channels_last=t.channels_last,
                    progress=t.progress and ctx.is_main,
                    max_bad_images=bad_image_budget(cfg.data, len(dataset) // ctx.world_size),
                    max_nonfinite_steps=t.max_nonfinite_steps,
                )
            skip = state.batch if epoch == first else 0
            start_epoch(loader, epoch, skip_batches=skip)
            if skip and state.loader_generator is not None:
                loader.generator.set_state(state.loader_generator)
            state.loader_generator = loader.generator.get_state()  # this epoch's start
            self.objective.start_epoch(epoch)
            total = len(loader) if not t.max_train_batches else max(t.max_train_batches - skip, 0)
            polls = itertools.count(skip)

            def should_stop(epoch: int = epoch, polls: Any = polls) -> bool:
                done = next(polls)
                hook = self.should_stop
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
                last = run_dir / "checkpoints" / "last.pt"
                kept = f"{last} (epoch {epoch - 1}) is kept" if last.is_file() else "nothing saved"
                raise CaptioningError(
                    f"{exc} (trainer.max_nonfinite_steps={t.max_nonfinite_steps}); {kept}: "
                    "lower optim.lr, set optim.grad_clip or check the data, then resume with "
                    "trainer.resume"
                ) from None
            streak = stats.nonfinite_streak
            check_finite(model, epoch, run_dir)
            state.step += stats.steps
            stats = merge_stats(state.partial if skip else None, stats)
            if stats.interrupted:
                interrupted = stop_name(stop.signum)
                state.epoch = epoch - 1
                save_run_checkpoints(
                    run_dir,
                    ("last.pt",),
                    state=state,
                    partial=stats,
                    metrics={f"best_{t.monitor}": state.best},
                    **saving,
                )
                log.warning(
                    "stopped in epoch %d after %d batches: checkpoints/last.pt written; resume "
                    "with trainer.resume=%s",
                    epoch,
                    stats.steps + stats.skipped,
                    run_dir,
                )
                break
            scores, _ = evaluate_split(self, "val", records["val"], decoding)
            improved = scores[t.monitor] > state.best
            state.epoch, state.best = epoch, max(state.best, scores[t.monitor])
            state.best_epoch = epoch if improved else state.best_epoch
            row = self._log_epoch(epoch, state, stats, scores, improved, scheduler, run_log)
            self.history.append(row)
            names = ("last.pt", "best.pt") if improved else ("last.pt",)
            metrics = {**scores, f"best_{t.monitor}": state.best}
            save_run_checkpoints(run_dir, names, state=state, metrics=metrics, **saving)
            signals = [s for s in gather_objects(stop.signum) if s is not None]  # any rank's
            if signals:
                interrupted = stop_name(signals[0])
                break
            patience = t.early_stop_patience
            if patience and epoch - (state.best_epoch or epoch) >= patience and epoch < t.epochs:
                log.info(
                    "early stop after epoch %d: no better %s for %d epochs (best %.4f, epoch %d)",
                    epoch,
                    t.monitor,
                    patience,
                    state.best,
                    state.best_epoch,
                )
                break
        if run_log is not None:
            run_log.close()
        summary = self._summary(state.best, interrupted)
        if interrupted is None and t.test_after_training:
            summary.update(self.test())
        return summary

    def _log_epoch(
        self,
        epoch: int,
        state: RunState,
        stats: Any,
        scores: Mapping[str, float],
        improved: bool,
        scheduler: Any,
        run_log: RunLog | None,
    ) -> dict[str, float]:
        """The epoch's metrics row: logged, written to metrics.csv and TensorBoard."""
        monitor = self.config.trainer.monitor
        row = {
            "epoch": epoch,
            "step": state.step,
            "train_loss": stats.loss,
            **{f"train_{k}": v for k, v in stats.extra.items()},
            "epoch_seconds": stats.seconds,
            "lr": scheduler.get_last_lr()[0],
            **{f"val_{k}": v for k, v in scores.items()},
        }
        faults = [
            f"{n} {what}"
            for n, what in (
                (stats.nonfinite, "non-finite steps skipped"),
                (stats.bad_images, "unreadable images skipped"),
            )
            if n
        ]
        extra = "".join(f", {k} {v:.3f}" for k, v in stats.extra.items())
        log.info(
            "epoch %d: loss %.3f%s (%.0f s, %.0f %ss/s) | val %s %.4f, CIDEr %.3f%s%s",
            epoch,
            stats.loss,
            extra,
            stats.seconds,
            stats.words / max(stats.seconds, 1e-9),
            self.objective.unit,
            monitor,
            scores[monitor],
            scores.get("CIDEr", float("nan")),
            " (best)" if improved else "",
            f" | {', '.join(faults)}" if faults else "",
        )
        if run_log is not None:
            run_log.log_epoch(row)
        return row

    def _summary(self, best: float, interrupted: str | None) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "best": best,
            "history": list(self.history),
            "interrupted": interrupted,
        }

    # -- scoring on its own --------------------------------------------------------------------

    def evaluate(
        self,
        split: str = "val",
        *,
        checkpoint: str | Path | None = None,
        metrics: tuple[str, ...] = ("Bleu", "CIDEr"),
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
        records = load_records(self.config.data, self.ctx, (split,))[split]
        decoding = self.config.to_dict()["decoding"]
        return evaluate_split(self, split, records, decoding, metrics=metrics)

    def test(self) -> dict[str, Any]:
        """Score ``checkpoints/best.pt`` on the test split with the official metrics.

        Writes ``test_scores.json`` and ``test_results.json`` into the run directory.

        Returns:
            ``test`` (scores) and ``examples`` (image path and caption of a few test images).
        """
        if self.run_dir is None:
            raise CaptioningError("Trainer.test() needs run_dir (the run whose best.pt to score)")
        return test_checkpoint(self)
