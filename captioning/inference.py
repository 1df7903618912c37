"""Captioner: a trained model, its vocabulary and preprocessing, ready to caption images."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from captioning.checkpoint import CheckpointError, load_checkpoint, restore_model
from captioning.contracts import EncoderOutput
from captioning.data.images import MAX_PIXELS, ImageLoadError, load_image, to_rgb
from captioning.data.transforms import eval_transform
from captioning.decoding import DecodingSettings, Generation, generate
from captioning.devices import resolve_device
from captioning.errors import CaptioningError
from captioning.models.caption_model import CaptionModel
from captioning.vocab import Vocabulary

__all__ = ["Captioner", "ImageLike"]

ImageLike = str | os.PathLike | Image.Image | torch.Tensor


class Captioner:
    """Caption images with a trained model.

    Example:
        >>> captioner = Captioner.from_checkpoint("outputs/demo/checkpoints/best.pt")
        >>> captioner.caption("photo.jpg")
        'a large red circle to the left of a small blue square'
    """

    def __init__(
        self,
        model: CaptionModel,
        vocab: Vocabulary,
        *,
        device: str | torch.device = "auto",
        decoding: DecodingSettings | Mapping[str, Any] | None = None,
        max_pixels: int | None = MAX_PIXELS,
    ) -> None:
        """Args:
        model: a trained CaptionModel.
        vocab: the vocabulary it was trained with.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``, ...
        decoding: the default decoding settings, or a mapping of some of them
            (e.g. ``{"max_len": 20}``; the others keep :class:`DecodingSettings`' defaults).
        max_pixels: image files larger than this (width x height) are refused
            (:func:`~captioning.data.images.load_image`; None: no limit of ours).
        """
        self.device = resolve_device(str(device))
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        if not isinstance(decoding, DecodingSettings):
            decoding = DecodingSettings.from_mapping(decoding or {})
        self.decoding = decoding
        self.transform = eval_transform(model.encoder.preprocess)
        self.max_pixels = max_pixels

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike | Mapping[str, Any],
        *,
        device: str = "auto",
        max_pixels: int | None = MAX_PIXELS,
        source: str | os.PathLike | None = None,
    ) -> Captioner:
        """Load a checkpoint written by training (a file, or a run directory).

        Only plain data is read (``torch.load(weights_only=True)``); see
        :func:`~captioning.checkpoint.load_checkpoint` and
        :func:`~captioning.checkpoint.restore_model` for what is refused, and how.

        Args:
            path: ``.../checkpoints/best.pt`` or the run directory holding it; or a checkpoint
                already read with :func:`~captioning.checkpoint.load_checkpoint` (so that a
                caller who needs more of it reads the file once).
            device: where to run.
            max_pixels: largest image accepted (see :class:`Captioner`).
            source: where a checkpoint passed as a mapping came from, for error messages.

        Returns:
            The captioner, with the run's decoding settings as defaults.
        """
        ckpt = path if isinstance(path, Mapping) else load_checkpoint(path)
        path = (source or "checkpoint") if isinstance(path, Mapping) else path  # (for messages)
        model, vocab = restore_model(ckpt, source=path)
        decoding = ckpt["config"].get("decoding") or {}
        if not isinstance(decoding, Mapping):
            raise CheckpointError(f"{path}: its config's 'decoding' entry is not a mapping")
        decoding = {k: v for k, v in decoding.items() if not str(k).startswith("_")}
        try:
            settings = DecodingSettings.from_mapping(decoding, "decoding")
        except CaptioningError as exc:
            raise CheckpointError(f"{path}: its config's {exc}") from None
        return cls(model, vocab, device=device, decoding=settings, max_pixels=max_pixels)

    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """Read (if a path) and transform one image into the model's input.

        Args:
            image: a path, a PIL image, or an already preprocessed (3, H, W) tensor (returned
                as is).

        Returns:
            (3, H, W) tensor.

        Raises:
            ImageLoadError: the file cannot be read as an image (the message names it).
        """
        if isinstance(image, torch.Tensor):
            return image
        pil = (
            to_rgb(image)
            if isinstance(image, Image.Image)
            else load_image(  # a large JPEG decodes at reduced scale: only the model sees it
                image, max_pixels=self.max_pixels, min_side=self.transform.decode_min_side
            )
        )
        return self.transform(pil)  # (3, H, W)

    def preprocess_many(
        self, images: Sequence[ImageLike]
    ) -> tuple[list[tuple[int, torch.Tensor]], list[tuple[int, ImageLoadError]]]:
        """Preprocess images one by one, keeping going past the ones that cannot be read.

        Args:
            images: paths or PIL images.

        Returns:
            (position and tensor of each readable image, position and error of each other one),
            in input order.
        """
        good, bad = [], []
        for k, image in enumerate(images):
            try:
                good.append((k, self.preprocess(image)))
            except ImageLoadError as exc:
                bad.append((k, exc))
        return good, bad

    @torch.no_grad()
    def generate(
        self,
        images: Sequence[ImageLike] | EncoderOutput,
        settings: DecodingSettings | None = None,
        **decoding: Any,
    ) -> Generation:
        """Decode a batch of images; returns ids, scores and attention maps.

        Args:
            images: paths, PIL images or preprocessed (3, H, W) tensors (:meth:`preprocess`);
                or, for a model of pre-extracted features (``encoder=precomputed``), their
                batch as an :class:`~captioning.contracts.EncoderOutput`.
            settings: the decoding settings (None: :attr:`decoding`, the captioner's defaults).
            **decoding: overrides of those settings (``beam_size``, ``max_len``,
                ``length_penalty``, ``no_repeat_ngram_size``, ``n_best``, ``sample``,
                ``temperature``, ``top_k``, ``num_samples``: the fields of
                :class:`~captioning.decoding.DecodingSettings`), and ``generator`` for sampling.

        Returns:
            The :class:`~captioning.decoding.Generation` for the batch.
        """
        if isinstance(images, EncoderOutput):  # pre-extracted features (encoder=precomputed)
            features = images.to(self.device)
        elif len(images) == 0:
            raise CaptioningError("no images to decode: pass at least one image")
        else:
            batch = torch.stack([self.preprocess(im) for im in images]).to(self.device)
            features = self.model.encode(batch)  # from (B, 3, H, W)
        return generate(
            self.model,
            features,
            settings or self.decoding,
            bos_id=self.vocab.bos_id,
            eos_id=self.vocab.eos_id,
            pad_id=self.vocab.pad_id,
            **decoding,
        )

    def caption(
        self, images: ImageLike | Sequence[ImageLike], **decoding: Any
    ) -> str | list[str] | list[list[str]]:
        """Caption one image or several.

        With one caption per image (greedy, ``n_best=1``, one sample) one image gives a string
        and several give a list of strings. With ``n_best=k`` (beam search) or ``num_samples=k``
        (sampling) each image gives a list of k captions, best first (samples too, by their
        log-probability: :meth:`~captioning.decoding.Generation.best_first`): one image gives
        that list, several give a list of such lists.

        Args:
            images: a path or PIL image, or a sequence of them.
            **decoding: decoding arguments, e.g. ``beam_size=3, max_len=16, n_best=3``.

        Returns:
            The caption(s).
        """
        single = isinstance(images, (str, os.PathLike, Image.Image, torch.Tensor))
        batch = [images] if single else list(images)
        if not batch:
            return []  # nothing in, nothing out
        seqs = self.generate(batch, **decoding).best_first().sequences  # (B, K, T)
        captions: list[Any] = [[self.vocab.decode(s) for s in row] for row in seqs.tolist()]
        if seqs.size(1) == 1:
            captions = [row[0] for row in captions]
        return captions[0] if single else captions
