"""DecodingSettings: how to decode, in one frozen dataclass (the ``decoding`` config group).

The same type serves the run config (``RunConfig.decoding``, parsed from ``conf/decoding/*.yaml``
by :func:`captioning.settings.parse_settings`), :func:`captioning.decoding.generate`, the
``Captioner``'s defaults, the web demo and the command-line flags. The field names are Hugging
Face ``generate``'s. Every check lives in :meth:`DecodingSettings.checked`: a value out of range
or two settings that do not go together is one :class:`~captioning.errors.CaptioningError` line
naming the keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from captioning.errors import CaptioningError
from captioning.settings import parse_settings, unknown_key

__all__ = ["DecodingSettings"]


def _setting(default: Any, *, ge: float | None = None, note: str | None = None) -> Any:
    """A field with a default and a lower bound (checked by ``parse_settings`` and
    :meth:`DecodingSettings.checked`); `note` explains the bound in the error message."""
    return field(default=default, metadata={"ge": ge, "note": note})


@dataclass(frozen=True)
class DecodingSettings:
    """``decoding``: how validation, evaluation, captioning and the demo decode (conf/decoding/).

    The strategy follows from the settings: ``sample=True`` draws words
    (:func:`~captioning.decoding.sample`); otherwise greedy search when ``beam_size == 1`` and
    ``length_penalty``, ``no_repeat_ngram_size`` and ``n_best`` keep their defaults, else beam
    search (:func:`~captioning.decoding.beam_search`).

    Attributes:
        beam_size: hypotheses kept per image (1: greedy).
        max_len: most words per caption, `<end>` included.
        length_penalty: beam score = summed log-probs / length ** length_penalty.
        no_repeat_ngram_size: n > 0 forbids repeating any n-gram within a caption.
        n_best: beam hypotheses returned per image (<= beam_size).
        sample: draw words instead of searching.
        temperature: sampling temperature (0: greedy); ignored unless sampling.
        top_k: sample among the k most likely words (None: all); ignored unless sampling.
        num_samples: captions drawn per image when sampling.
    """

    beam_size: int = _setting(1, ge=1)
    max_len: int = _setting(20, ge=1)
    length_penalty: float = 0.0
    no_repeat_ngram_size: int = _setting(0, ge=0, note="0 = off")
    n_best: int = _setting(1, ge=1)
    sample: bool = False
    temperature: float = _setting(1.0, ge=0.0, note="0 = greedy")
    top_k: int | None = _setting(None, ge=1, note="or None: every word")
    num_samples: int = _setting(1, ge=1)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], prefix: str = "") -> DecodingSettings:
        """Settings from a mapping (a config's or a checkpoint's ``decoding``); absent keys keep
        their defaults. Unknown keys, wrong types and values out of range are refused, one
        line naming ``prefix.key``; the checks between settings wait for :meth:`checked`."""
        return parse_settings(cls, mapping, prefix)

    def replace(self, **changes: Any) -> DecodingSettings:
        """A copy with `changes` (checked like :meth:`from_mapping`: names, types, ranges)."""
        if not changes:
            return self
        names = [f.name for f in dataclasses.fields(self)]
        for key in changes:
            if key not in names:
                raise unknown_key(f"decoding.{key}", names)
        current = {name: getattr(self, name) for name in names}
        return parse_settings(type(self), {**current, **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{name: value}`` (what checkpoints store as ``config["decoding"]``)."""
        return dataclasses.asdict(self)

    def checked(self, prefix: str = "") -> DecodingSettings:
        """These settings, once every check passes.

        Args:
            prefix: the dotted path of these settings in a config (``"decoding"``), for the
                messages; empty for keyword arguments.

        Returns:
            ``self``.

        Raises:
            CaptioningError: one line naming the first value out of range, or the first two
                settings that do not go together; it carries the settings, so that a front end
                names them its own way (:meth:`~captioning.errors.CaptioningError.named`).
        """
        p = f"{prefix}." if prefix else ""
        values = self.to_dict()
        for spec in dataclasses.fields(self):
            value, ge = getattr(self, spec.name), spec.metadata.get("ge")
            if ge is not None and value is not None and value < ge:
                note = spec.metadata.get("note")
                note = f" ({note})" if note else ""
                raise CaptioningError(
                    f"{{{spec.name}}}: must be >= {ge}{note}", settings=values, prefix=p
                )
        if self.n_best > self.beam_size:
            raise CaptioningError("{n_best} must be <= {beam_size}", settings=values, prefix=p)
        if self.sample and (self.beam_size != 1 or self.n_best != 1):
            raise CaptioningError(
                "sampling draws {num_samples:name} captions per image: use {beam_size=1} and "
                "{n_best=1} with {sample=True} (or {sample=False} for beam search); got "
                "{beam_size}, {n_best}",
                settings=values,
                prefix=p,
            )
        if self.num_samples != 1 and not self.sample:
            raise CaptioningError("{num_samples} needs {sample=True}", settings=values, prefix=p)
        return self
