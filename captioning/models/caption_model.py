"""CaptionModel = encoder + decoder, and building one from a plain config.

The config's ``encoder`` and ``decoder`` nodes (plain mappings, or their typed
:class:`~captioning.targets.BuilderSettings`) name their builders with ``_target_``, resolved by
:mod:`captioning.targets` under ``captioning.models`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from captioning.contracts import EncoderOutput
from captioning.errors import CaptioningError
from captioning.targets import BuilderSettings, instantiate

__all__ = ["CaptionModel", "build_model"]


class CaptionModel(nn.Module):
    """An image encoder followed by a caption decoder."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, images: Tensor) -> EncoderOutput:
        """images (B, 3, H, W) -> EncoderOutput(vector (B, D_v), grid (B, L, D_g))."""
        return self.encoder(images)

    def forward(
        self,
        images: Tensor | EncoderOutput,
        inputs: Tensor,
        lengths: Tensor,
        image_index: Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Teacher-forced logits (B, T, V); see the decoder's forward.

        Args:
            images: (N, 3, H, W), each encoded once; or their precomputed encoder output
                (e.g. from the feature cache), which skips the encoder.
            inputs: (B, T) input words `<start> w1 ... wn`, right-padded.
            lengths: (B,) real input words per row.
            image_index: (B,) the image row of each caption (None: B == N, one caption each).
            **kwargs: passed to the decoder (e.g. ``return_alphas=True`` for attention).
        """
        features = images if isinstance(images, EncoderOutput) else self.encode(images)
        if image_index is not None:
            features = features.select(image_index)  # (B, ...) one row per caption
        return self.decoder(features, inputs, lengths, **kwargs)


def build_model(config: Mapping[str, Any] | Any, *, vocab_size: int) -> CaptionModel:
    """Build the model a run config describes.

    Args:
        config: a plain mapping with ``encoder`` and ``decoder`` nodes (``_target_`` + kwargs),
            e.g. a checkpoint's ``config``; or an object whose ``encoder`` and ``decoder`` are
            :class:`~captioning.targets.BuilderSettings` (a run's typed config).
        vocab_size: size of the vocabulary the decoder predicts.

    Returns:
        The (randomly initialised, or encoder-pretrained) model.
    """
    parts = {}
    for key in ("encoder", "decoder"):
        node = config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)
        if not isinstance(node, Mapping | BuilderSettings):
            raise CaptioningError(f"config has no '{key}' section with a _target_")
        parts[key] = node
    encoder = instantiate(parts["encoder"], part="encoder")
    decoder = instantiate(
        parts["decoder"],
        part="decoder",
        vocab_size=vocab_size,
        vector_dim=encoder.vector_dim,
        grid_dim=encoder.grid_dim,
    )
    return CaptionModel(encoder, decoder)
