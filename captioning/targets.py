"""``_target_`` resolution: configs name the classes they build, the library imports only its own.

Configs name their classes with hydra's ``_target_`` key. The library resolves them itself (no
hydra at run time) and only ever imports callables from an allowed package: model parts from
``captioning.models`` (a config read from a checkpoint someone sent you cannot make this code
import or call anything else), training objectives from ``captioning.training.objectives``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from captioning.errors import CaptioningError

__all__ = ["MODEL_PREFIX", "check_arguments", "instantiate", "resolve_target"]

MODEL_PREFIX = "captioning.models."


def resolve_target(
    node: Mapping[str, Any], *, part: str = "config", prefix: str = MODEL_PREFIX
) -> Callable[..., Any]:
    """The callable a config node's ``_target_`` names, if it lies under `prefix`.

    Args:
        node: a mapping with ``_target_``.
        part: the config section, for the error message (``"encoder"``, ``"decoder"``).
        prefix: the package the target must come from.

    Returns:
        The callable (imported, not called).
    """
    target = node.get("_target_") if isinstance(node, Mapping) else None
    if not isinstance(target, str) or not target.startswith(prefix):
        raise CaptioningError(
            f"{part}._target_={target!r} is not allowed: a {part} must come from "
            f"{prefix}* (choose one from conf/{part}/ with {part}=NAME)"
        )
    module_name, _, attr = target.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        factory = None
    if not callable(factory):
        raise CaptioningError(
            f"{part}._target_={target} does not exist in captioning; choose a {part} from "
            f"conf/{part}/ ({part}=NAME) or fix the _target_"
        )
    return factory


def _arguments(node: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if not str(k).startswith("_")}


def check_arguments(
    node: Mapping[str, Any],
    *,
    part: str = "config",
    prefix: str = MODEL_PREFIX,
    runtime: tuple[str, ...] = (),
) -> Callable[..., Any]:
    """Resolve the target and check that the node's keys are arguments it takes (no call).

    Args:
        node: a mapping with ``_target_``.
        part: the config section, for the error message.
        prefix: the package the target must come from.
        runtime: arguments the library passes when it builds it (e.g. ``vocab_size``).

    Returns:
        The callable.
    """
    factory = resolve_target(node, part=part, prefix=prefix)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return factory
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return factory
    unknown = sorted(set(_arguments(node)) - set(params))
    clash = sorted(set(_arguments(node)) & set(runtime))
    if unknown or clash:
        key = (unknown or clash)[0]
        why = "is not an argument of" if unknown else "is set by the library for"
        takes = ", ".join(p for p in params if p not in runtime and not p.startswith("_"))
        raise CaptioningError(f"{part}.{key} {why} {node['_target_']} (its settings: {takes})")
    return factory


def instantiate(
    node: Mapping[str, Any], *, part: str = "config", prefix: str = MODEL_PREFIX, **kwargs: Any
) -> Any:
    """Call the ``_target_`` of a config node with its other keys plus `kwargs`.

    Args:
        node: a mapping with ``_target_`` (a dotted name under `prefix`).
        part: the config section, for error messages.
        prefix: the package the target must come from.
        **kwargs: run-time arguments (vocabulary size, feature sizes), added to the node's.

    Returns:
        What the target returns.
    """
    factory = resolve_target(node, part=part, prefix=prefix)
    try:
        return factory(**_arguments(node), **kwargs)
    except TypeError as exc:
        raise CaptioningError(
            f"{part} config for {node['_target_']} does not fit its arguments: {exc}"
        ) from None
