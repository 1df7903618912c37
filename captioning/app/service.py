"""The web demo's request handling: images and decoding settings in, answers out.

:class:`DemoService` holds one :class:`~captioning.inference.Captioner` (loaded once) and turns
requests (an image file and the :class:`~captioning.decoding.DecodingSettings` the page's
controls ask for, :meth:`DemoService.settings_for`) into :class:`Answer` objects: the caption,
the n-best list with scores and, for attention decoders, the words with their attention weights.
Requests with the same settings are decoded together as one batch; sampling requests are decoded
one by one, each with its own seed, so that a seed gives the same samples whatever else is
waiting. A file that cannot be read, or settings the decoder refuses, give an answer holding a
one-line error, never an exception, naming the page's controls (:func:`page_name`), not the
library's settings. Nothing here needs Gradio (:mod:`captioning.app.page` is the
page).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from captioning.data.images import load_image
from captioning.decoding import DecodingSettings, Generation
from captioning.errors import NAME_ONLY, CaptioningError, library_name
from captioning.inference import Captioner
from captioning.visualize.attention import attention_steps, model_view

__all__ = ["MAX_BEAM", "METHODS", "PAGE_NAMES", "Answer", "DemoService", "method_of", "page_name"]

#: the searches the page offers
METHODS = ("greedy", "beam search", "sampling")
#: the largest beam and the most captions listed a request may ask for (the page offers 10)
MAX_BEAM = 20


#: library setting -> what the page calls it (its control, or how the page's limit is set)
PAGE_NAMES = {
    "beam_size": "Beam size",
    "n_best": "Captions listed",
    "num_samples": "Captions listed",
    "temperature": "Temperature",
}


def page_name(key: str, value: Any) -> str:
    """A :data:`~captioning.errors.Namer` for the page: a setting as the control that sets it
    (``"Beam size" 3``); ``max_pixels``, which no control sets, as the page's limit and the
    flag of ``tools/demo_app.py`` that sets it; anything else as the library writes it."""
    if key == "max_pixels":
        if value is NAME_ONLY:
            return "the limit (tools/demo_app.py --max-pixels N, when the page is started)"
        return f"this page's limit of {value} pixels"
    label = PAGE_NAMES.get(key)
    if label is None:
        return library_name(key, value)
    return f'"{label}"' if value is NAME_ONLY else f'"{label}" {value}'


def _within_limit(name: str, value: int) -> None:
    if not 1 <= value <= MAX_BEAM:
        raise CaptioningError(f"{{{name}}}: must be in 1..{MAX_BEAM}", settings={name: value})


def method_of(settings: DecodingSettings) -> str:
    """The page's name (one of :data:`METHODS`) for the search `settings` run."""
    if settings.sample:
        return "sampling"
    return "beam search" if settings.beam_size > 1 else "greedy"


@dataclass
class Answer:
    """What the page shows for one image.

    Attributes:
        caption: the best caption ("" when there is none).
        nbest: (score, caption) pairs, best first (summed log-probabilities; beam search:
            length-normalised).
        words: the best caption's words, one per decoding step (``<end>`` included), for
            attention decoders; empty otherwise.
        attention: (T, L) attention weights of those words, or None.
        view: the image as the encoder saw it (what the maps are drawn over), or None.
        error: a one-line message when the image or the settings were refused.
    """

    caption: str = ""
    nbest: list[tuple[float, str]] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    attention: np.ndarray | None = None
    view: Image.Image | None = None
    error: str | None = None


class DemoService:
    """The model behind the page: loaded once, one decoding per batch of requests."""

    def __init__(self, captioner: Captioner) -> None:
        """Args:
        captioner: the loaded model (``Captioner.from_checkpoint``).
        """
        self.captioner = captioner
        self.has_attention = bool(getattr(captioner.model.decoder, "has_attention", False))

    def settings_for(
        self, method: str, beam_size: int = 3, n_best: int = 3, temperature: float = 1.0
    ) -> DecodingSettings:
        """What the page's controls ask for: the checkpoint's decoding settings (``max_len``,
        ``length_penalty``, ...) with this search.

        Args:
            method: one of :data:`METHODS`.
            beam_size: hypotheses kept by beam search.
            n_best: captions listed: beam hypotheses (at most ``beam_size``) or samples drawn.
            temperature: sampling temperature (0: greedy).

        Raises:
            CaptioningError: an unknown method, or sizes outside 1..:data:`MAX_BEAM`.
        """
        if method not in METHODS:
            raise CaptioningError(f"unknown decoding {method!r}: choose one of {METHODS}")
        _within_limit("beam_size", beam_size)
        _within_limit("n_best", n_best)
        ours = self.captioner.decoding.replace(sample=False, num_samples=1)
        if method == "greedy":
            return ours.replace(beam_size=1, n_best=1)
        if method == "beam search":
            return ours.replace(beam_size=int(beam_size), n_best=min(int(n_best), int(beam_size)))
        return ours.replace(
            beam_size=1,
            n_best=1,
            sample=True,
            temperature=float(temperature),
            num_samples=int(n_best),
        )

    def default_decoding(self) -> DecodingSettings:
        """The checkpoint's own search (what ``tools/caption.py`` runs without flags): beam
        search listing the whole beam when its ``beam_size`` > 1, else greedy."""
        beam = min(self.captioner.decoding.beam_size, MAX_BEAM)
        return (
            self.settings_for("beam search", beam, beam)
            if beam > 1
            else self.settings_for("greedy")
        )

    def answer(
        self,
        images: Sequence[str | os.PathLike | None],
        settings: Sequence[DecodingSettings],
        seeds: Sequence[int] | None = None,
    ) -> list[Answer]:
        """Caption a batch of requests.

        Args:
            images: image files (None: no image, an empty answer).
            settings: the decoding each request asks for (:meth:`settings_for`).
            seeds: each request's sampling seed (the same seed, image and settings give the
                same samples); None: 0 for all.

        Returns:
            One answer per request, in order; refused files and settings carry ``error``.
        """
        seeds = list(seeds) if seeds is not None else [0] * len(images)
        answers = [Answer() for _ in images]
        groups: dict[Any, list[int]] = {}
        tensors: dict[int, torch.Tensor] = {}
        for k, (path, decoding) in enumerate(zip(images, settings, strict=True)):
            if path is None:
                continue
            try:
                picture = load_image(path, max_pixels=self.captioner.max_pixels)
                tensors[k] = self.captioner.preprocess(picture)  # (3, H, W)
            except CaptioningError as exc:
                answers[k].error = exc.named(page_name)
                continue
            if self.has_attention:
                answers[k].view = model_view(picture, self.captioner.model.encoder.preprocess)
            key = k if decoding.sample else decoding  # sampling: its own seed
            groups.setdefault(key, []).append(k)
        for members in groups.values():
            first = settings[members[0]]
            try:
                for name in ("beam_size", "n_best", "num_samples"):
                    _within_limit(name, getattr(first, name))
                generator = None
                if first.sample:
                    generator = torch.Generator(device=self.captioner.device)
                    generator.manual_seed(int(seeds[members[0]]))
                batch = [tensors[k] for k in members]
                gen = self.captioner.generate(batch, first, generator=generator).best_first()
            except CaptioningError as exc:
                for k in members:
                    answers[k].error, answers[k].view = exc.named(page_name), None
                continue
            for row, k in enumerate(members):
                self._fill(answers[k], gen, row)
        return answers

    def _fill(self, answer: Answer, gen: Generation, row: int) -> None:
        """The captions of image `row` of `gen` (sorted: :meth:`Generation.best_first`) and the
        best one's attention."""
        seqs, scores = gen.sequences[row], gen.scores[row]  # (K, T), (K,): best first
        vocab = self.captioner.vocab
        answer.nbest = [
            (float(p), vocab.decode(ids)) for p, ids in zip(scores, seqs.tolist(), strict=True)
        ]
        answer.caption = answer.nbest[0][1]
        if gen.attention is not None and answer.view is not None:
            one = Generation(  # the best: (1, 1, T), (1, 1), (1, 1, T, L)
                seqs[None, :1], scores[None, :1], gen.attention[None, row, :1]
            )
            words, alphas = attention_steps(one, vocab, 0)
            answer.words, answer.attention = words, alphas.numpy()  # (T, L)
