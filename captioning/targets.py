"""``_target_`` resolution: configs name the classes they build, the library imports only its own.

Configs name their classes with hydra's ``_target_`` key. The library resolves them itself (no
hydra at run time) and only ever imports callables from an allowed package: model parts from
``captioning.models`` (a config read from a checkpoint someone sent you cannot make this code
import or call anything else), training objectives from ``captioning.training.objectives``.

A run's model parts reach the code as :class:`BuilderSettings` (:class:`EncoderSettings`,
:class:`DecoderSettings`): the node checked against the builder's signature and type hints, kept
as given so that :meth:`BuilderSettings.to_dict` is exactly the plain node checkpoints store.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from captioning.errors import CaptioningError
from captioning.settings import check_value, plain

__all__ = [
    "MODEL_PREFIX",
    "BuilderSettings",
    "DecoderSettings",
    "EncoderSettings",
    "check_arguments",
    "check_types",
    "instantiate",
    "resolve_target",
]

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


def check_types(factory: Callable[..., Any], arguments: Mapping[str, Any], *, part: str) -> None:
    """Check each argument against the type hint of the builder's parameter of that name.

    Args:
        factory: the builder (a function or a class).
        arguments: the node's keyword arguments (plain data).
        part: the config section, for the one-line error (``"decoder.hidden_dim='abc': must be
            an integer"``).
    """
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:  # hints that do not resolve here: the builder checks its arguments itself
        return
    for name, value in arguments.items():
        if name in hints:
            check_value(value, hints[name], f"{part}.{name}")


def instantiate(
    node: Mapping[str, Any] | BuilderSettings,
    *,
    part: str = "config",
    prefix: str = MODEL_PREFIX,
    **kwargs: Any,
) -> Any:
    """Call the ``_target_`` of a config node with its other keys plus `kwargs`.

    Args:
        node: a mapping with ``_target_`` (a dotted name under `prefix`), or its
            :class:`BuilderSettings`.
        part: the config section, for error messages.
        prefix: the package the target must come from.
        **kwargs: run-time arguments (vocabulary size, feature sizes), added to the node's.

    Returns:
        What the target returns.
    """
    if isinstance(node, BuilderSettings):
        node = node.node
    factory = resolve_target(node, part=part, prefix=prefix)
    try:
        return factory(**_arguments(node), **kwargs)
    except TypeError as exc:
        raise CaptioningError(
            f"{part} config for {node['_target_']} does not fit its arguments: {exc}"
        ) from None


@dataclass(frozen=True)
class BuilderSettings:
    """A ``_target_`` config node: the builder it names and that builder's keyword arguments.

    :meth:`from_config` checks the node (the target lies under :attr:`prefix` and exists; every
    key is an argument of it, of the type its hint says); the constructor takes a node as it is
    (e.g. from a checkpoint, whose model :func:`captioning.checkpoint.restore_model` checks).

    Attributes:
        node: the node as plain data, ``_target_`` included, exactly as the config gives it.
    """

    node: dict[str, Any]

    #: the config section (error messages)
    part: ClassVar[str] = "config"
    #: the package the target must come from
    prefix: ClassVar[str] = MODEL_PREFIX
    #: arguments the library passes when it builds it (a node must not set them)
    runtime: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_config(cls, node: Any, key: str | None = None) -> BuilderSettings:
        """Check a config node and return it typed.

        Args:
            node: the node (a mapping with ``_target_``; hydra's DictConfig too).
            key: its dotted key in the whole config (default: :attr:`part`).

        Returns:
            The settings.

        Raises:
            CaptioningError: one line naming the target or the key that does not fit.
        """
        key = key or cls.part
        if not isinstance(node, Mapping):
            raise CaptioningError(f"{key} must be a mapping with a _target_, got {node!r}")
        node = plain(node)
        factory = check_arguments(node, part=key, prefix=cls.prefix, runtime=cls.runtime)
        check_types(factory, _arguments(node), part=key)
        return cls(node)

    @property
    def target(self) -> str:
        """The builder's dotted name (``_target_``)."""
        return str(self.node["_target_"])

    @property
    def arguments(self) -> dict[str, Any]:
        """The keyword arguments the node gives the builder."""
        return _arguments(self.node)

    def argument(self, name: str) -> Any:
        """An argument as the builder gets it: the node's value, else the builder's default
        (None when it has neither)."""
        if name in self.node:
            return self.node[name]
        factory = resolve_target(self.node, part=self.part, prefix=self.prefix)
        try:
            param = inspect.signature(factory).parameters.get(name)
        except (TypeError, ValueError):
            param = None
        if param is None or param.default is inspect.Parameter.empty:
            return None
        return param.default

    def build(self, **runtime: Any) -> Any:
        """Call the builder with the node's arguments plus `runtime` ones."""
        return instantiate(self.node, part=self.part, prefix=self.prefix, **runtime)

    def to_dict(self) -> dict[str, Any]:
        """The node as plain data (a copy), as checkpoints store it."""
        return copy.deepcopy(self.node)


class EncoderSettings(BuilderSettings):
    """``encoder``: an image encoder builder under ``captioning.models`` (conf/encoder/)."""

    part = "encoder"

    @property
    def trainable(self) -> bool:
        """``encoder.trainable``: whether the encoder learns (the builder's default if unset)."""
        return bool(self.argument("trainable"))

    @property
    def fine_tune_from(self) -> int | None:
        """``encoder.fine_tune_from``: the first block that learns (None: every block)."""
        value = self.argument("fine_tune_from")
        return None if value is None else int(value)


class DecoderSettings(BuilderSettings):
    """``decoder``: a caption decoder builder under ``captioning.models`` (conf/decoder/); the
    library passes the vocabulary and feature sizes."""

    part = "decoder"
    runtime = ("vocab_size", "vector_dim", "grid_dim")
