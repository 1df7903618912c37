"""Resuming a run (``trainer.resume``): which checkpoint and run directory, the config the run
continues with (:func:`resumed_config`: its own, with only :data:`RESUMABLE` keys changed), and
whether the checkpoint fits the configured run. Restoring what it holds:
:mod:`captioning.training.state`.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from captioning.checkpoint import load_checkpoint
from captioning.distributed import DistContext, broadcast_object
from captioning.errors import CaptioningError
from captioning.io import check_writable

__all__ = [
    "RESUMABLE",
    "config_differences",
    "load_resume",
    "resume_source",
    "resumed_config",
    "run_directory",
]

log = logging.getLogger(__name__)

#: The keys a resumed run may change: how long it runs and when it stops, the faults it
#: tolerates, what it shows and logs, where its data is, and the hardware. Everything else (the
#: model, data set, optimizer, schedule, objective, decoding, seed, batch size, precision) is
#: the run's own, from its checkpoint: changing it is a new run (or a warm start from this one).
RESUMABLE = (
    "trainer.epochs",
    "trainer.early_stop_patience",
    "trainer.test_after_training",
    "trainer.max_nonfinite_steps",
    "data.max_bad_image_fraction",
    "trainer.progress",
    "trainer.tensorboard",
    "data.root",
    "data.cache_dir",
    "data.image_cache",
    "data.image_cache_gb",
    "trainer.device",
    "trainer.threads",
    "trainer.num_workers",
    "trainer.eval_batch_size",
    "trainer.dist_timeout_minutes",
)
_MISSING = object()


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


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for each leaf of nested mappings."""
    if not isinstance(node, Mapping):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    *path, last = key.split(".")
    for part in path:
        config = config.setdefault(part, {})
    config[last] = value


def resumed_config(
    saved: Mapping[str, Any], given: Mapping[str, Any], touched: Iterable[str], resume: str
) -> dict[str, Any]:
    """The config a resumed run continues with: the run's own, with the :data:`RESUMABLE` keys
    that the command line set.

    Args:
        saved: the run's config (its checkpoint's ``config``).
        given: the config as composed now (defaults and the command line's overrides).
        touched: what the command line overrode: keys or sections (``"decoder"``), ``""`` for
            all of it (a group such as ``experiment`` sets keys anywhere).
        resume: the ``trainer.resume`` value, for the messages.

    Returns:
        `saved` with the overridden resumable keys from `given` (and keys that `saved` lacks,
        from an older checkpoint, outside the model parts), ``trainer.resume`` set and
        ``trainer.init_from`` cleared (the weights come from the checkpoint).

    Raises:
        CaptioningError: one line naming the overridden keys that differ from the run's and
            may not change on resume.
    """
    merged = copy.deepcopy(dict(saved))
    touched = tuple(touched)
    old = _leaves(saved)
    conflicts = []
    for key, value in _leaves(given).items():
        part = saved.get(key.split(".")[0])
        if old.get(key, _MISSING) is _MISSING and not (
            isinstance(part, Mapping) and "_target_" in part
        ):
            _set(merged, key, value)  # a key the run's (older) checkpoint does not have
        if key in ("trainer.resume", "trainer.init_from") or not any(
            t == "" or key == t or key.startswith(f"{t}.") for t in touched
        ):
            continue
        if key in RESUMABLE:
            _set(merged, key, value)
        elif old.get(key, _MISSING) != value:
            was = old.get(key, "unset")
            conflicts.append(f"{key} ({was!r} in the run, {value!r} given)")
    if conflicts:
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise CaptioningError(
            f"trainer.resume={resume} continues the run with its own settings, but the command "
            f"line changes {'; '.join(conflicts[:3])}{more}; only the run's length, logging, "
            "data location and hardware (trainer.epochs, trainer.device, ...: the README's "
            "list) may change on resume: drop those overrides, or start a new run with them "
            f"(without trainer.resume, or warm-started with trainer.init_from={resume})"
        )
    _set(merged, "trainer.resume", resume)
    _set(merged, "trainer.init_from", None)
    return merged
