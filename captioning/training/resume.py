"""Resuming a run (``trainer.resume``): which checkpoint and run directory, and whether the
checkpoint fits the configured run. Restoring what it holds: :mod:`captioning.training.state`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from captioning.checkpoint import load_checkpoint
from captioning.distributed import DistContext, broadcast_object
from captioning.errors import CaptioningError
from captioning.io import check_writable

__all__ = ["config_differences", "load_resume", "resume_source", "run_directory"]

log = logging.getLogger(__name__)


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
