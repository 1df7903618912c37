"""generate(): decode with the strategy a :class:`DecodingSettings` selects."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from captioning.contracts import EncoderOutput
from captioning.decoding.beam_search import beam_search
from captioning.decoding.result import Generation
from captioning.decoding.sampling import greedy, sample
from captioning.decoding.settings import DecodingSettings

__all__ = ["generate"]


def generate(
    model: nn.Module,
    features: EncoderOutput | None,
    settings: DecodingSettings | None = None,
    *,
    generator: torch.Generator | None = None,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    batch_size: int | None = None,
    **overrides: Any,
) -> Generation:
    """Decode with the strategy the settings select (Hugging Face ``generate`` names).

    ``sample=True``: :func:`~captioning.decoding.sample` (``temperature``, ``top_k``,
    ``num_samples``, ``generator``; needs beam_size = n_best = 1). Otherwise
    :func:`~captioning.decoding.greedy` when beam_size == 1 and length_penalty,
    no_repeat_ngram_size and n_best keep their defaults, else
    :func:`~captioning.decoding.beam_search` (whose beam_size=1 gives greedy's words).
    ``temperature`` and ``top_k`` are ignored unless sampling.

    Args:
        model: a CaptionModel or a decoder with the step contract.
        features: encoder output for B images (None for an image-free decoder).
        settings: the decoding settings (None: the defaults of :class:`DecodingSettings`).
        generator: random generator for sampling.
        bos_id: id fed at the first step.
        eos_id: id that finishes a caption.
        pad_id: id written after `<end>`.
        batch_size: B when `features` is None.
        **overrides: settings that replace those of `settings`, by field name
            (``beam_size=3, n_best=3``).

    Returns:
        The strategy's :class:`Generation`: sequences (B, K, T) (K = 1 for greedy search and
        one sample, n_best for beam search, num_samples for sampling); ``.best`` is (B, T).

    Raises:
        CaptioningError: an unknown setting, a value out of range, or settings that do not go
            together (:meth:`DecodingSettings.checked`).
    """
    s = (settings or DecodingSettings()).replace(**overrides).checked()
    ids: dict[str, Any] = dict(
        max_len=s.max_len, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, batch_size=batch_size
    )
    if s.sample:
        return sample(
            model,
            features,
            temperature=s.temperature,
            top_k=s.top_k,
            num_samples=s.num_samples,
            generator=generator,
            no_repeat_ngram_size=s.no_repeat_ngram_size,
            **ids,
        )
    if s.beam_size == 1 and s.n_best == 1 and s.no_repeat_ngram_size == 0 and s.length_penalty == 0:
        return greedy(model, features, **ids)
    return beam_search(
        model,
        features,
        beam_size=s.beam_size,
        n_best=s.n_best,
        length_penalty=s.length_penalty,
        no_repeat_ngram_size=s.no_repeat_ngram_size,
        **ids,
    )
