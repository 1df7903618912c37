"""The web demo's request handling: images and decoding settings in, answers out.

:class:`DemoService` holds one :class:`~captioning.inference.Captioner` (loaded once) and turns
requests (an image file and the decoding the page's controls ask for, a :class:`Decoding`) into
:class:`Answer` objects: the caption, the n-best list with scores and, for attention decoders,
the words with their attention weights. Requests with the same search settings are decoded
together as one batch; sampling requests are decoded one by one, each with its own seed, so that
a seed gives the same samples whatever else is waiting. A file that cannot be read, or settings
the decoder refuses, give an answer holding a one-line error, never an exception. Nothing here
needs Gradio (:mod:`captioning.app.page` is the page).
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
from captioning.decoding import Generation
from captioning.errors import CaptioningError
from captioning.inference import Captioner
from captioning.visualize.attention import attention_steps, model_view

__all__ = ["MAX_BEAM", "METHODS", "Answer", "Decoding", "DemoService"]

#: the searches the page offers
METHODS = ("greedy", "beam search", "sampling")
#: the largest beam and the most captions listed a request may ask for (the page offers 10)
MAX_BEAM = 20


@dataclass(frozen=True)
class Decoding:
    """What the page's controls ask for.

    Attributes:
        method: one of :data:`METHODS`.
        beam_size: hypotheses kept by beam search.
        n_best: captions listed: beam hypotheses (at most ``beam_size``) or samples drawn.
        temperature: sampling temperature (0: greedy).
        seed: sampling seed (the same seed, image and settings give the same samples).
    """

    method: str = "greedy"
    beam_size: int = 3
    n_best: int = 3
    temperature: float = 1.0
    seed: int = 0

    def arguments(self, defaults: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """Keyword arguments of :func:`captioning.decoding.generate`: `defaults` (the
        checkpoint's decoding: ``max_len``, ``length_penalty``, ...) with this search.

        Raises:
            CaptioningError: an unknown method, or sizes outside 1..:data:`MAX_BEAM`.
        """
        if self.method not in METHODS:
            raise CaptioningError(f"unknown decoding {self.method!r}: choose one of {METHODS}")
        for name in ("beam_size", "n_best"):
            if not 1 <= getattr(self, name) <= MAX_BEAM:
                raise CaptioningError(f"{name} must be in 1..{MAX_BEAM}, got {getattr(self, name)}")
        args = {k: v for k, v in defaults.items() if k not in ("sample", "num_samples")}  # ours
        if self.method == "greedy":
            return {**args, "beam_size": 1, "n_best": 1}
        if self.method == "beam search":
            n_best = max(1, min(int(self.n_best), int(self.beam_size)))
            return {**args, "beam_size": int(self.beam_size), "n_best": n_best}
        generator = torch.Generator(device=device).manual_seed(int(self.seed))
        return {
            **args,
            "beam_size": 1,
            "n_best": 1,
            "sample": True,
            "temperature": float(self.temperature),
            "num_samples": int(self.n_best),
            "generator": generator,
        }


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

    def default_decoding(self) -> Decoding:
        """The checkpoint's own search (what ``tools/caption.py`` runs without flags): beam
        search listing the whole beam when its ``beam_size`` > 1, else greedy."""
        beam = int(self.captioner.decoding.get("beam_size", 1))
        return Decoding("beam search", beam, beam) if beam > 1 else Decoding("greedy")

    def answer(
        self, images: Sequence[str | os.PathLike | None], decodings: Sequence[Decoding]
    ) -> list[Answer]:
        """Caption a batch of requests.

        Args:
            images: image files (None: no image, an empty answer).
            decodings: the search each request asks for.

        Returns:
            One answer per request, in order; refused files and settings carry ``error``.
        """
        answers = [Answer() for _ in images]
        groups: dict[Any, list[int]] = {}
        tensors: dict[int, torch.Tensor] = {}
        for k, (path, decoding) in enumerate(zip(images, decodings, strict=True)):
            if path is None:
                continue
            try:
                picture = load_image(path, max_pixels=self.captioner.max_pixels)
                tensors[k] = self.captioner.preprocess(picture)  # (3, H, W)
            except CaptioningError as exc:
                answers[k].error = str(exc)
                continue
            if self.has_attention:
                answers[k].view = model_view(picture, self.captioner.model.encoder.preprocess)
            key = k if decoding.method == "sampling" else decoding  # sampling: its own seed
            groups.setdefault(key, []).append(k)
        for members in groups.values():
            try:
                args = decodings[members[0]].arguments(
                    self.captioner.decoding, self.captioner.device
                )
                gen = self.captioner.generate([tensors[k] for k in members], **args)
            except CaptioningError as exc:
                for k in members:
                    answers[k].error, answers[k].view = str(exc), None
                continue
            for row, k in enumerate(members):
                self._fill(answers[k], gen, row)
        return answers

    def _fill(self, answer: Answer, gen: Generation, row: int) -> None:
        """The captions of image `row` of `gen`, best first, and the best one's attention."""
        seqs, scores = gen.sequences[row], gen.scores[row]  # (T,) / (K, T); () / (K,)
        attention = gen.attention[row] if gen.attention is not None else None
        if seqs.dim() == 1:
            seqs, scores = seqs.unsqueeze(0), scores.unsqueeze(0)  # (1, T), (1,)
            attention = attention.unsqueeze(0) if attention is not None else None  # (1, T, L)
        order = scores.argsort(descending=True, stable=True).tolist()  # samples come unsorted
        vocab = self.captioner.vocab
        answer.nbest = [(float(scores[j]), vocab.decode(seqs[j].tolist())) for j in order]
        answer.caption = answer.nbest[0][1]
        if attention is not None and answer.view is not None:
            best = order[0]
            one = Generation(
                seqs[best : best + 1], scores[best : best + 1], attention[best : best + 1]
            )
            words, alphas = attention_steps(one, vocab, 0)
            answer.words, answer.attention = words, alphas.numpy()  # (T, L)
