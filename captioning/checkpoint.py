"""Checkpoints: plain data only, written atomically, read without unpickling arbitrary objects.

A checkpoint is one ``torch.save`` of a dict with ``format_version``, ``model`` (state dict),
``config`` (resolved, plain dict), ``vocab`` (list of tokens), ``epoch``, ``step``, ``metrics``,
``optimizer``, ``scheduler`` and ``rng``. It is written to a temporary file in the same folder
and renamed into place, so a crash never leaves a half-written checkpoint under the final name.
Loading uses ``torch.load(weights_only=True)``: a file that carries pickled objects (which could
run code when unpickled) is refused before any of it is executed. :func:`restore_model` rebuilds
the model a checkpoint describes (config ``_target_`` s are restricted to ``captioning.models``)
and says exactly what does not fit when its weights, vocabulary and config disagree. (About 320
lines: writing, the checks on reading and the restore share one definition of the format.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from captioning.data.records import is_int
from captioning.errors import CaptioningError, one_line
from captioning.io import atomic_write
from captioning.models.caption_model import CaptionModel, build_model
from captioning.models.weights import names_weights_file
from captioning.vocab import Vocabulary

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "get_rng_state",
    "load_checkpoint",
    "restore_model",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "config", "vocab", "epoch", "step")


class CheckpointError(CaptioningError):
    """A checkpoint that cannot or must not be loaded."""


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: dict[str, torch.Tensor],
    config: dict[str, Any],
    vocab: list[str],
    epoch: int,
    step: int,
    metrics: dict[str, float] | None = None,
    optimizer: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None,
    rng: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically.

    Args:
        path: destination file.
        model: the model's state dict.
        config: the resolved run config as plain containers.
        vocab: the vocabulary's tokens (index = id).
        epoch: epochs completed.
        step: optimizer steps taken.
        metrics: latest validation metrics (and e.g. the best so far).
        optimizer: the optimizer's state dict.
        scheduler: the LR scheduler's state dict.
        rng: random generator states, from :func:`get_rng_state`.
        extra: more plain data (e.g. trainer counters).

    Returns:
        The path written.
    """
    payload = {
        "format_version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in model.items()},
        "config": config,
        "vocab": list(vocab),
        "epoch": int(epoch),
        "step": int(step),
        "metrics": dict(metrics or {}),
        "optimizer": optimizer,
        "scheduler": scheduler,
        "rng": rng,
        **(extra or {}),
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Read and check a checkpoint without unpickling arbitrary objects.

    Args:
        path: a file written by :func:`save_checkpoint`.
        map_location: where tensors go.

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: missing, unreadable, carrying pickled objects, or of another format.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / "checkpoints" / name).is_file():
                path = path / "checkpoints" / name
                break
        else:
            raise CheckpointError(_folder_without_checkpoint(path))
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with path.open("rb") as f:
        head = f.read(4)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch's zip format, or legacy pickle
        raise CheckpointError(
            f"{path} is not a readable checkpoint (not a torch file); pass a .pt file written by "
            "training (RUN_DIR/checkpoints/best.pt) or a run directory"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:
            raise CheckpointError(
                f"{path} is not a readable checkpoint (corrupt, or not a torch file)"
            ) from None
        raise CheckpointError(
            f"refused to load {path}: it holds a pickled Python object ({found.group(1)}), not "
            "plain data, and unpickling it could run code; nothing of it was executed"
        ) from None
    except Exception as exc:  # truncated, not a torch file (text: KeyError deep in the unpickler)
        detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or not a torch file: {detail}); "
            "pass a .pt file written by training (RUN_DIR/checkpoints/best.pt) or a run directory"
        ) from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        raise CheckpointError(f"{path} is not a captioning checkpoint (missing {missing})")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format_version {ckpt['format_version']!r}; this version of "
            f"captioning reads format_version {FORMAT_VERSION}"
        )
    wrong = [
        key
        for key, ok in (
            ("model", _is_state_dict(ckpt["model"])),
            ("config", isinstance(ckpt["config"], dict)),
            (
                "vocab",
                isinstance(ckpt["vocab"], list) and all(isinstance(t, str) for t in ckpt["vocab"]),
            ),
            ("epoch", is_int(ckpt["epoch"])),
            ("step", is_int(ckpt["step"])),
        )
        if not ok
    ]
    if wrong:
        raise CheckpointError(
            f"{path} is not a valid captioning checkpoint: {', '.join(wrong)} have the wrong type "
            "(expected a state dict of tensors, a config dict, a list of tokens, integer counts)"
        )
    return ckpt


def _folder_without_checkpoint(folder: Path) -> str:
    """What a folder passed as a checkpoint holds instead, and what to pass."""
    held = sorted(f.name for f in folder.glob("*.pt") if f.is_file())
    runs = sorted({f.parent.parent for f in folder.glob("*/checkpoints/*.pt")})
    if held:
        run = f" or the run folder {folder.parent}" if folder.name == "checkpoints" else ""
        return f"{folder} is a folder of checkpoints ({_few(held)}); pass one of them{run}"
    if runs:
        return (
            f"{folder} is no run folder (no checkpoints/best.pt or last.pt) but holds runs "
            f"({_few([r.name for r in runs])}); pass one of them, e.g. {runs[0]}"
        )
    return (
        f"{folder} holds no checkpoint (no checkpoints/best.pt or last.pt, no .pt file); pass a "
        "checkpoint file (RUN_DIR/checkpoints/best.pt) or a run folder"
    )


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def _few(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" (and {len(items) - n} more)" if len(items) > n else "")


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a logger's warnings (the encoder warns about random weights it gets replaced)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def restore_model(
    ckpt: Mapping[str, Any], *, source: str | os.PathLike = "checkpoint"
) -> tuple[CaptionModel, Vocabulary]:
    """Rebuild the model a checkpoint describes and load its weights.

    The encoder is built without its pretrained-weights *file* (``encoder.weights`` set to a
    path): the checkpoint holds every weight, and the file may not exist on this machine.
    (A torchvision weights name is kept: it also sets the preprocessing; torchvision reads it
    from its cache, or downloads it once.)

    Args:
        ckpt: a checkpoint dict from :func:`load_checkpoint`.
        source: where it came from, for error messages.

    Returns:
        (model with the checkpoint's weights, vocabulary).

    Raises:
        CaptioningError: the vocabulary, the config and the weights do not fit each other (the
            message says which part), or a config ``_target_`` is outside ``captioning.models``.
    """
    vocab = Vocabulary(ckpt["vocab"])
    config = dict(ckpt["config"])
    encoder = config.get("encoder")
    weights = encoder.get("weights") if isinstance(encoder, Mapping) else None
    if weights is not None and names_weights_file(weights):
        config["encoder"] = {**encoder, "weights": None}
    try:
        with _quiet("captioning.models"):
            model = build_model(config, vocab_size=len(vocab))
    except OSError as exc:  # torchvision weights neither cached nor downloadable (offline)
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {one_line(exc, 120)}"
        raise CheckpointError(
            f"{source}: building its encoder needs torchvision's {weights} weights (for their "
            f"preprocessing), which are not cached here and could not be downloaded "
            f"({reason}); put the file in the torch hub cache ($TORCH_HOME/hub/checkpoints)"
        ) from None
    state, expected = ckpt["model"], model.state_dict()
    shapes = [
        (k, tuple(state[k].shape), tuple(v.shape))
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    for key, got, want in shapes:
        if (
            want
            and got
            and want[0] == len(vocab)
            and got[0] != want[0]
            and key.startswith("decoder.")
        ):
            raise CheckpointError(
                f"{source}: its decoder weights ({key}) are for {got[0]} words but its vocabulary "
                f"has {len(vocab)}: the checkpoint is inconsistent (weights and vocab differ)"
            )
    problems = [
        f"{what} {_few(keys)}"
        for what, keys in (
            ("missing weights", [k for k in expected if k not in state]),
            ("unexpected weights", [k for k in state if k not in expected]),
            ("wrong shapes", [f"{k} {got} (model {want})" for k, got, want in shapes]),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"{source}: its weights do not fit the model its config describes: "
            f"{'; '.join(problems)}"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = one_line(exc, 200)
        raise CheckpointError(f"{source}: weights do not load into the model ({detail})") from None
    return model, vocab


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, as plain data."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    """Lists back to the tuples `random.setstate` wants."""
    return tuple(_tuples(i) for i in x) if isinstance(x, list | tuple) else x
