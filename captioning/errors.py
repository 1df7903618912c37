"""The project's own error type: one line that says what is wrong and what to do.

A message about settings names them the way its reader knows them: the library says
``n_best=5``, ``tools/caption.py`` says ``--n-best 5``, the web page names its own controls.
So such an error is raised with a template and the settings it names::

    raise CaptioningError("{n_best} must be <= {beam_size}", settings={"n_best": 5, "beam_size": 1})

``str(error)`` writes each setting as the library does (``n_best=5 must be <= beam_size=1``) and
:meth:`CaptioningError.named` as a front end does, through its own :data:`Namer`
(:func:`captioning.cli.common.flag_name` for the commands). In a template, ``{key}`` is the setting
with its value, ``{key:name}`` its name alone and ``{key=V}`` the setting with the value ``V``
(a Python literal: ``{sample=True}``, ``{beam_size=1}``); every other brace is text.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["NAME_ONLY", "CaptioningError", "Namer", "library_name", "one_line"]

#: the value a :data:`Namer` gets for ``{key:name}``: write the setting's name alone
NAME_ONLY: Any = type("NameOnly", (), {"__repr__": lambda self: "NAME_ONLY"})()

#: (dotted setting name, value or NAME_ONLY) -> how a front end writes that setting
Namer = Callable[[str, Any], str]

_PLACEHOLDER = re.compile(r"\{(\w+)(:name|=[^{}]+)?\}")


def library_name(key: str, value: Any) -> str:
    """How the library writes a setting: ``key=value``, or ``key`` for :data:`NAME_ONLY`."""
    return key if value is NAME_ONLY else f"{key}={value}"


class CaptioningError(Exception):
    """A user-facing error: bad input, a wrong path, an incompatible checkpoint.

    Entry points catch it and print its message on one line (no traceback); a front end that
    has its own names for settings prints :meth:`named` instead.
    """

    def __init__(
        self, message: str = "", *, settings: Mapping[str, Any] | None = None, prefix: str = ""
    ) -> None:
        """Args:
        message: the message; with `settings`, a template naming them (module docstring).
        settings: the settings the template names, ``{name: value}``; None: a plain message.
        prefix: the settings' place in a config (``"decoding."``), written before each name.
        """
        self.template = message if settings is not None else None
        self.settings = dict(settings or {})
        self.prefix = prefix
        super().__init__(self.named(library_name) if settings is not None else message)

    def named(self, namer: Namer) -> str:
        """The message with every setting written by `namer` (a plain message as it is).

        Args:
            namer: ``(dotted name, value)`` -> text; it gets :data:`NAME_ONLY` for a name alone
                and the prefixed name (``"decoding.beam_size"``) for a config's settings.
        """
        if self.template is None:
            return str(self)

        def write(found: re.Match[str]) -> str:
            key, form = found.group(1), found.group(2) or ""
            if key not in self.settings:
                return found.group(0)
            if form == ":name":
                value = NAME_ONLY
            elif form.startswith("="):
                value = ast.literal_eval(form[1:])
            else:
                value = self.settings[key]
            return namer(self.prefix + key, value)

        return _PLACEHOLDER.sub(write, self.template)


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception's message on one line, for a :class:`CaptioningError` that quotes it (Pillow,
    torch and pickle messages sometimes span several); its type's name when it has none.

    Args:
        exc: the exception.
        limit: keep at most this many characters (None: all).
    """
    text = " ".join(str(exc).split())[:limit]
    return text or type(exc).__name__
