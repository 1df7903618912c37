"""Typed settings: dataclasses that the YAML files in ``conf/`` fill, and their parser.

Every default is written once, in ``conf/``: a settings dataclass declares which keys exist,
their types (``int``, ``float``, ``bool``, ``str``, ``Literal[...]`` choices, ``X | None``,
``dict``, nested dataclasses, or a type that parses itself with a ``from_config(node, key)``
class method, such as a ``_target_`` node) and their valid ranges (:func:`bounded`), and
:func:`parse_settings` checks a mapping against it. A misspelt key, a missing one, a wrong type or a value out of range
is one :class:`~captioning.errors.CaptioningError` line naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any, Literal, TypeVar

from captioning.errors import CaptioningError

__all__ = ["bounded", "check_value", "parse_settings", "plain", "unknown_key"]

T = TypeVar("T")


def bounded(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A field with bounds, checked by :func:`parse_settings` (no default: the YAML gives it)."""
    return field(metadata={"ge": ge, "gt": gt, "le": le, "lt": lt})


def plain(value: Any) -> Any:
    """Nested mappings and sequences (hydra's DictConfig/ListConfig too) as dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(v) for v in value]
    return value


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        names = dict.fromkeys(str(a).lower() if isinstance(a, bool) else a for a in args)
        return "one of " + ", ".join(names)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(hint, "a mapping" if origin is dict or hint is dict else str(hint))


def _coerce(value: Any, hint: Any, key: str, renamed: Mapping[str, str] | None = None) -> Any:
    """`value` checked against (and, for numbers, converted to) the type `hint`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = CaptioningError(f"{key}={value!r}: must be {_describe(hint)}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, renamed)
            except CaptioningError:
                continue
        raise bad
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise bad
    if isinstance(hint, type) and callable(getattr(hint, "from_config", None)):
        return hint.from_config(value, key)  # a type that checks its own node
    if dataclasses.is_dataclass(hint):
        return parse_settings(hint, value, key, renamed=renamed)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise bad
        return plain(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise bad
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # e.g. data.root=2024
        raise bad
    return plain(value)


def check_value(value: Any, hint: Any, key: str) -> Any:
    """`value` checked against (and, for numbers, converted to) the type `hint`.

    Args:
        value: a config value (plain data).
        hint: a type hint (``int``, ``float | None``, ``Literal[...]``, ...); hints this module
            does not know accept any value.
        key: the dotted key, for the one-line error.

    Returns:
        The value (an ``int`` given for a ``float`` as a float).
    """
    return _coerce(value, hint, key)


def _check_range(value: Any, bounds: Mapping[str, Any], key: str) -> None:
    if value is None or not bounds:
        return
    ge, gt, le, lt = (bounds.get(k) for k in ("ge", "gt", "le", "lt"))
    note = f" ({bounds['note']})" if bounds.get("note") else ""  # what the bound means
    section, _, name = key.rpartition(".")
    for bound, broken, text in (
        (ge, lambda b: value < b, ">="),
        (gt, lambda b: value <= b, ">"),
        (le, lambda b: value > b, "<="),
        (lt, lambda b: value >= b, "<"),
    ):
        if bound is not None and broken(bound):
            raise CaptioningError(  # names the setting: a front end may write it as its flag
                f"{{{name}}}: must be {text} {bound}{note}",
                settings={name: value},
                prefix=f"{section}." if section else "",
            )


def unknown_key(
    key: str, known: Sequence[str], renamed: Mapping[str, str] | None = None
) -> CaptioningError:
    """The error for a key that is not a setting: its new name (`renamed`), or the closest ones."""
    for old, new in (renamed or {}).items():
        if key == old or key.startswith(old + "."):
            return CaptioningError(f"{key} is now {new + key[len(old) :]}: use that key instead")
    section, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"it has {', '.join(sorted(known))}"
    where = f"{section} has no setting {name!r}" if section else f"no section {name!r}"
    return CaptioningError(f"{key} is not a setting: {where} ({hint})")


def parse_settings(
    cls: type[T], node: Any, prefix: str = "", *, renamed: Mapping[str, str] | None = None
) -> T:
    """A `cls` instance from a mapping; every error names the dotted key.

    Args:
        cls: a settings dataclass.
        node: the mapping (hydra's DictConfig, or plain dicts).
        prefix: the dotted path of `node` in the whole config (``"trainer"``).
        renamed: old dotted key -> new one, for the error message of a key that moved.

    Returns:
        The dataclass instance.
    """
    if not isinstance(node, Mapping):
        raise CaptioningError(f"{prefix or 'the config'} must be a mapping, got {node!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in node:
        if key not in fields and not (not prefix and key == "hydra"):
            raise unknown_key(f"{prefix}.{key}" if prefix else str(key), list(fields), renamed)
    values = {}
    for name, spec in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in node:
            no_default = dataclasses.MISSING  # (neither a default nor a default_factory)
            if spec.default is no_default and spec.default_factory is no_default:
                raise CaptioningError(f"{key} is missing: add it to the config (see conf/)")
            continue
        values[name] = _coerce(node[name], hints[name], key, renamed)
        _check_range(values[name], spec.metadata, key)
    return cls(**values)
