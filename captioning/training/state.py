"""Run state and exact resume: what a training checkpoint holds beyond the model, and reading it back.

A training checkpoint (:mod:`captioning.checkpoint` format) also carries ``trainer_state``
(epochs and optimizer steps done, best monitored value, batches done in an interrupted epoch and
that epoch's partial sums), ``sampler`` (seed, epoch, items skipped), ``loader_generator`` (the
training loader's generator at the start of the epoch, which seeds its workers), ``scaler``
(float16 loss scaling) and ``rng_per_rank``. Restoring all of it makes a resumed run continue
with exactly the batches, augmentations, dropout masks and learning rates of an uninterrupted
one, mid-epoch too.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from captioning.checkpoint import get_rng_state, load_checkpoint, save_checkpoint
from captioning.distributed import DistContext, broadcast_object, gather_objects
from captioning.errors import CaptioningError
from captioning.training.loop import EpochStats

__all__ = [
    "RunState",
    "check_finite",
    "check_writable",
    "config_differences",
    "load_resume",
    "merge_stats",
    "restore_state",
    "resume_source",
    "run_directory",
    "save_run_checkpoints",
]

log = logging.getLogger(__name__)

_PARTIAL = ("loss_sum", "words", "steps", "skipped", "seconds", "nonfinite", "bad_images")


@dataclass
class RunState:
    """Where a run stands.

    Attributes:
        epoch: epochs completed.
        step: optimizer steps taken.
        best: best monitored validation value so far.
        best_epoch: the epoch that reached it (None: none yet, or an older checkpoint).
        batch: batches already done of epoch ``epoch + 1`` (an interrupted epoch).
        partial: that epoch's partial sums (see :func:`merge_stats`), or None.
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


def check_writable(folder: Path, setting: str) -> None:
    """Create `folder` and write a probe file in it, so an unusable output folder is reported
    (one line, naming the setting to change) before any long work starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CaptioningError(
            f"cannot write to {folder} ({exc.strerror or type(exc).__name__}); "
            f"set {setting} to a folder you can write to"
        ) from None


def check_finite(model: nn.Module, epoch: int, run_dir: Path) -> None:
    """Refuse to go on (and to checkpoint) with non-finite weights."""
    tensors = [*model.named_parameters(), *model.named_buffers()]  # BatchNorm statistics too
    bad = [n for n, t in tensors if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CaptioningError(
            f"the model's weights became non-finite in epoch {epoch} ({', '.join(bad[:3])}); "
            f"nothing was saved, {run_dir / 'checkpoints' / 'last.pt'} is the last good model: "
            "lower optim.lr or set optim.grad_clip, then resume with trainer.resume"
        )


def resume_source(value: str | Path | None) -> tuple[Path, Path | None] | None:
    """``trainer.resume`` -> (checkpoint file, run directory it belongs to, if any)."""
    if not value:
        return None
    path = Path(str(value))
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.pt"
        if not ckpt.is_file():
            raise CaptioningError(f"trainer.resume={path}: no checkpoints/last.pt in that folder")
        return ckpt, path
    if not path.is_file():
        raise CaptioningError(f"trainer.resume={path}: no such run directory or checkpoint")
    return path, path.parent.parent if path.parent.name == "checkpoints" else None


def run_directory(
    run_dir: str | Path | None, resume: tuple[Path, Path | None] | None, ctx: DistContext
) -> Path:
    """Where a run writes: a resumed run directory, else `run_dir`, else ``outputs/DATE/TIME``;
    the same on every rank (rank 0's), and checked to be writable before any long work."""
    if resume is not None and resume[1] is not None:
        run_dir, where = resume[1], "trainer.resume"
    else:
        run_dir = run_dir or Path("outputs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        where = "hydra.run.dir (run_dir)"
    run_dir = Path(broadcast_object(str(run_dir)))
    if ctx.is_main:
        check_writable(run_dir, where)
    return run_dir


def config_differences(
    old: Any, new: Any, prefix: str, labels: tuple[str, str] = ("in the checkpoint", "now")
) -> list[str]:
    """``"key: OLD <labels[0]>, NEW <labels[1]>"`` for each leaf that differs between two config
    nodes (nested mappings), in key order."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = sorted(set(old) | set(new), key=str)
        return [
            d
            for k in keys
            for d in config_differences(old.get(k), new.get(k), f"{prefix}.{k}", labels)
        ]
    return [] if old == new else [f"{prefix}: {old!r} {labels[0]}, {new!r} {labels[1]}"]


def load_resume(
    path: Path, config: Mapping[str, Any], run_dir: Path | None = None
) -> dict[str, Any]:
    """Read the checkpoint to resume and check that it fits the configured model and run.

    Args:
        path: the checkpoint.
        config: this run's config as plain dicts.
        run_dir: the run directory it is resumed in (its ``vocab.json`` must match), if known.

    Returns:
        The checkpoint.
    """
    ckpt = load_checkpoint(path)
    for part in ("encoder", "decoder"):
        diff = config_differences(ckpt["config"].get(part), config.get(part), part)
        if diff:
            raise CaptioningError(
                f"trainer.resume={path}: the checkpoint's {part} config differs from this run's "
                f"({'; '.join(diff[:3])}); resume with the same {part} settings"
            )
    if ckpt.get("optimizer") is None:
        raise CaptioningError(
            f"trainer.resume={path}: the checkpoint has no optimizer state, so it cannot be "
            "resumed; start a new run instead"
        )
    saved = run_dir / "vocab.json" if run_dir is not None else None
    if saved is not None and saved.is_file():
        try:
            words = json.loads(saved.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            words = None
        if isinstance(words, list) and words != ckpt["vocab"]:
            raise CaptioningError(
                f"trainer.resume={path}: the checkpoint's vocabulary ({len(ckpt['vocab'])} words) "
                f"differs from the run's {saved} ({len(words)} words); resume from a checkpoint "
                "of that run"
            )
    if ckpt["config"].get("data") != config.get("data"):
        log.warning("resuming with a different data config than %s was trained with", path)
    return ckpt


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
        detail = " ".join(str(exc).split())[:160]
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


def merge_stats(partial: Mapping[str, Any] | None, stats: EpochStats) -> EpochStats:
    """Add the part of an epoch done before a resume to the part done after it."""
    if not partial:
        return stats
    sums = {k: partial.get(k, 0) + getattr(stats, k) for k in _PARTIAL}
    extra = dict(stats.extra)
    done = partial.get("steps", 0)
    for key, mean in (partial.get("extra") or {}).items():  # per-step means, weighted
        extra[key] = (mean * done + extra.get(key, 0.0) * stats.steps) / max(sums["steps"], 1)
    return EpochStats(
        loss=sums["loss_sum"] / sums["words"] if sums["words"] else float("nan"),
        interrupted=stats.interrupted,
        nonfinite_streak=stats.nonfinite_streak,
        extra=extra,
        **sums,
    )


def _state_payload(
    state: RunState, partial: EpochStats | None, loader: DataLoader, scaler: Any
) -> dict[str, Any]:
    """What a checkpoint needs beyond model and optimizer to continue exactly."""
    batch, part = 0, None
    if partial is not None:
        batch = partial.steps + partial.skipped
        part = {k: getattr(partial, k) for k in _PARTIAL}
        part.update(nonfinite_streak=partial.nonfinite_streak, extra=dict(partial.extra))
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
