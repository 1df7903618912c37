"""Captioner: a trained model, its vocabulary and preprocessing, ready to caption images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from captioning.checkpoint import CheckpointError, load_checkpoint
from captioning.data.images import load_image, to_rgb
from captioning.data.transforms import eval_transform
from captioning.decoding import Generation, generate
from captioning.engine import resolve_device
from captioning.models.captioner import CaptionModel, build_model
from captioning.vocab import Vocabulary

__all__ = ["Captioner", "ImageLike"]

ImageLike = str | os.PathLike | Image.Image


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
        decoding: dict[str, Any] | None = None,
    ) -> None:
        """Args:
        model: a trained CaptionModel.
        vocab: the vocabulary it was trained with.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``, ...
        decoding: default decoding arguments (e.g. ``{"max_len": 20}``).
        """
        self.device = resolve_device(str(device))
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.decoding = dict(decoding or {})
        self.transform = eval_transform(model.encoder.preprocess)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str = "auto") -> Captioner:
        """Load a checkpoint written by training (a file, or a run directory).

        Args:
            path: ``.../checkpoints/best.pt`` or the run directory holding it.
            device: where to run.

        Returns:
            The captioner, with the run's decoding settings as defaults.
        """
        ckpt = load_checkpoint(path)
        vocab = Vocabulary(ckpt["vocab"])
        config = ckpt["config"]
        model = build_model(config, vocab_size=len(vocab))
        state = ckpt["model"]
        out_key = "decoder.out.weight"
        if out_key in state and state[out_key].shape[0] != len(vocab):
            raise CheckpointError(
                f"{path}: its decoder predicts {state[out_key].shape[0]} words but its "
                f"vocabulary has {len(vocab)}: the checkpoint is inconsistent"
            )
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            detail = str(exc).splitlines()[0][:200]
            raise CheckpointError(
                f"{path}: weights do not fit the model its config describes ({detail})"
            ) from None
        decoding = {k: v for k, v in (config.get("decoding") or {}).items()
                    if not str(k).startswith("_")}
        return cls(model, vocab, device=device, decoding=decoding)

    def _tensor(self, image: ImageLike) -> torch.Tensor:
        pil = to_rgb(image) if isinstance(image, Image.Image) else load_image(image)
        return self.transform(pil)  # (3, H, W)

    @torch.no_grad()
    def generate(self, images: Sequence[ImageLike], **decoding: Any) -> Generation:
        """Decode a batch of images; returns ids, scores and attention maps.

        Args:
            images: paths or PIL images.
            **decoding: overrides of the default decoding arguments, i.e. the keyword arguments
                of :func:`captioning.decoding.generate` (``beam_size``, ``max_len``,
                ``length_penalty``, ``no_repeat_ngram_size``, ``n_best``, ``sample``,
                ``temperature``, ``top_k``, ``num_samples``, ``generator``).

        Returns:
            The :class:`~captioning.decoding.Generation` for the batch.
        """
        batch = torch.stack([self._tensor(im) for im in images]).to(self.device)  # (B, 3, H, W)
        features = self.model.encode(batch)
        args = {**self.decoding, **decoding}
        return generate(self.model, features, bos_id=self.vocab.bos_id,
                        eos_id=self.vocab.eos_id, pad_id=self.vocab.pad_id, **args)

    def caption(
        self, images: ImageLike | Sequence[ImageLike], **decoding: Any
    ) -> str | list[str] | list[list[str]]:
        """Caption one image or several.

        With one caption per image (greedy, ``n_best=1``, one sample) one image gives a string
        and several give a list of strings. With ``n_best=k`` (beam search) or ``num_samples=k``
        (sampling) each image gives a list of k captions, best first for beam search: one image
        gives that list, several give a list of such lists.

        Args:
            images: a path or PIL image, or a sequence of them.
            **decoding: decoding arguments, e.g. ``beam_size=3, max_len=16, n_best=3``.

        Returns:
            The caption(s).
        """
        single = isinstance(images, (str, os.PathLike, Image.Image))
        batch = [images] if single else list(images)
        gen = self.generate(batch, **decoding)
        seqs = gen.sequences
        if seqs.dim() == 2:
            seqs = seqs.unsqueeze(1)  # (B, 1, T)
        captions: list[Any] = [[self.vocab.decode(s) for s in row] for row in seqs.tolist()]
        if seqs.size(1) == 1:
            captions = [row[0] for row in captions]
        return captions[0] if single else captions
