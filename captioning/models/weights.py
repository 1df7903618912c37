"""Pretrained weights for torchvision encoders: one way to name them, load them and fail.

Every torchvision-based encoder (VGG, ResNet, any backbone) takes ``weights`` the same way:
``None`` (random init), a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``,
``"ResNet101_Weights.IMAGENET1K_V2"`` or the enum member: downloaded once into the torch hub
cache) or a local state-dict file saved from the same torchvision architecture (machines without
internet). A wrong name, a file that does not fit and a download that fails are each one
:class:`~captioning.errors.CaptioningError` line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from captioning.errors import CaptioningError, one_line

__all__ = [
    "Weights",
    "WeightsUnavailableError",
    "build_torchvision",
    "is_weights_file",
    "load_state_dict_file",
    "names_weights_file",
    "resolve_weights",
]

logger = logging.getLogger(__name__)

Weights = str | os.PathLike[str] | WeightsEnum | None


class WeightsUnavailableError(CaptioningError, OSError):
    """Torchvision weights neither in the hub cache nor downloadable (an offline machine).

    Also an :class:`OSError`, as the download error it replaces; :attr:`reason` is that error
    (``"URLError: <urlopen error ...>"``).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def names_weights_file(weights: object) -> bool:
    """A ``weights`` value that names a local file by its form (a path object, a ``/`` in it, or
    a ``.pt`` / ``.pth`` name), not a torchvision weights name; the file need not exist here."""
    if isinstance(weights, os.PathLike):
        return True
    text = str(weights)
    return "/" in text or os.sep in text or text.lower().endswith((".pt", ".pth"))


def is_weights_file(weights: str | os.PathLike[str]) -> bool:
    """A local file rather than a torchvision weights name (by its form, or an existing file)."""
    return names_weights_file(weights) or Path(weights).is_file()


def resolve_weights(name: str, weights: str | WeightsEnum) -> WeightsEnum:
    """The weights enum member of torchvision model `name` that `weights` names.

    Args:
        name: a torchvision model name (``"vgg16"``, ``"resnet101"``).
        weights: ``"DEFAULT"``, ``"IMAGENET1K_V1"``, ``"ResNet101_Weights.IMAGENET1K_V1"`` or a
            member of the model's weights enum.

    Returns:
        The member.

    Raises:
        CaptioningError: the name is not one of the model's weights.
    """
    enum_cls = torchvision.models.get_model_weights(name)
    if isinstance(weights, WeightsEnum):
        if not isinstance(weights, enum_cls):
            raise CaptioningError(f"weights {weights} do not fit {name}; use {enum_cls.__name__}")
        return weights
    prefix, _, member = weights.rpartition(".")
    if (prefix and prefix != enum_cls.__name__) or member not in enum_cls.__members__:
        raise CaptioningError(
            f"unknown weights {weights!r} for {name}; use None, a local .pt/.pth state-dict "
            f"path or one of: {', '.join(enum_cls.__members__)}"
        )
    return enum_cls[member]


def load_state_dict_file(
    model: nn.Module,
    path: Path,
    label: str,
    optional: str | tuple[str, ...] | Callable[[str], bool] | None,
) -> None:
    """Load a state-dict file into `model`; keys and shapes must match exactly, except that keys
    `optional` accepts (a key prefix, prefixes or a predicate) and BatchNorm
    ``num_batches_tracked`` may be missing.

    Args:
        model: the module to load into.
        path: the ``torch.save(model.state_dict(), path)`` file.
        label: the architecture, for messages.
        optional: which of `model`'s keys the file may lack (e.g. a classifier head it drops).

    Raises:
        CaptioningError: the file is missing, not a state dict of tensors, or does not fit.
    """
    if not path.is_file():
        raise CaptioningError(f"weights file {path} does not exist; check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / unsupported-object errors
        msg = one_line(exc, 200)
        raise CaptioningError(f"weights file {path} is not a loadable state dict ({msg})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CaptioningError(
            f"weights file {path} does not hold a state dict of tensors; "
            "save it with torch.save(model.state_dict(), path)"
        )
    expected = model.state_dict()
    if optional is None or callable(optional):
        may_drop = optional or (lambda key: False)
    else:
        prefixes = (optional,) if isinstance(optional, str) else tuple(optional)
        may_drop = lambda key: key.startswith(prefixes)  # noqa: E731

    def may_miss(key: str) -> bool:
        return key.endswith("num_batches_tracked") or may_drop(key)

    problems = {
        "missing": [k for k in expected if k not in state and not may_miss(k)],
        "unexpected": [k for k in state if k not in expected],
        "wrong shape": [k for k in state if k in expected and state[k].shape != expected[k].shape],
    }
    if any(problems.values()):
        details = "; ".join(f"{n} {len(ks)} (e.g. {ks[0]})" for n, ks in problems.items() if ks)
        raise CaptioningError(
            f"weights file {path} does not match {label}: {details}; "
            "use a state dict saved from the same architecture"
        )
    model.load_state_dict(state, strict=False)
    logger.info("loaded %s weights from %s", label, path)


def build_torchvision(
    name: str, weights: Weights, *, trainable: bool, **kwargs: Any
) -> tuple[nn.Module, WeightsEnum | None]:
    """Build torchvision classification model `name` with `weights` resolved as above.

    A local file is *not* loaded here (the caller knows which keys its encoder may drop: call
    :func:`load_state_dict_file`); the model comes back randomly initialised for it.

    Args:
        name: a registered torchvision model name.
        weights: ``None``, a weights name or member, or a local file path.
        trainable: whether the encoder will learn (random frozen weights get a warning).
        **kwargs: passed to the model builder (e.g. ``image_size`` for a ViT).

    Returns:
        (the model, the weights member or None for random init / a local file).

    Raises:
        CaptioningError: an unknown weights name; :class:`WeightsUnavailableError` when the
            weights are neither cached nor downloadable.
    """
    enum: WeightsEnum | None = None
    if isinstance(weights, WeightsEnum) or (weights is not None and not is_weights_file(weights)):
        enum = resolve_weights(name, weights)
        logger.info("building %s with torchvision weights %s (may download)", name, enum)
        if enum.name.endswith("FEATURES"):
            logger.warning("%s has no valid classifier: `vector` is meaningless, use `grid`", enum)
    elif weights is None and not trainable:
        logger.warning("%s has random weights and is frozen: its features are noise", name)
    try:
        model = torchvision.models.get_model(name, weights=enum, **kwargs)
    except OSError as exc:  # urllib's URLError and socket errors: not cached, no network
        reason = f"{type(exc).__name__}: {one_line(exc, 100)}"
        raise WeightsUnavailableError(
            f"torchvision's {enum} weights for {name} are not cached here and could not be "
            f"downloaded ({reason}); put the file in the torch hub cache "
            "($TORCH_HOME/hub/checkpoints) or pass a local state-dict file "
            "(encoder.weights=/path/file.pth)",
            reason,
        ) from None
    return model, enum
