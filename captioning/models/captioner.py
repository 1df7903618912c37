"""CaptionModel = encoder + decoder, and building one from a plain config.

Configs name their classes with hydra's ``_target_`` key. The library resolves them itself (no
hydra at run time) and only ever imports callables from ``captioning.models``: a config read from
a checkpoint someone sent you cannot make this code import or call anything else.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from captioning.errors import CaptioningError
from captioning.models.encoder import EncoderOutput

__all__ = [
    "ALLOWED_TARGET_PREFIX",
    "CaptionModel",
    "build_model",
    "instantiate",
    "resolve_target",
]

ALLOWED_TARGET_PREFIX = "captioning.models."


def resolve_target(node: Mapping[str, Any], *, part: str = "config") -> Callable[..., Any]:
    """The callable a config node's ``_target_`` names, if it lies under ``captioning.models``.

    Args:
        node: a mapping with ``_target_``.
        part: the config section, for the error message (``"encoder"``, ``"decoder"``).

    Returns:
        The callable (imported, not called).
    """
    target = node.get("_target_") if isinstance(node, Mapping) else None
    if not isinstance(target, str) or not target.startswith(ALLOWED_TARGET_PREFIX):
        raise CaptioningError(
            f"{part}._target_={target!r} is not allowed: model parts must come from "
            f"{ALLOWED_TARGET_PREFIX}* (choose one from conf/{part}/ with {part}=NAME)"
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


def instantiate(node: Mapping[str, Any], *, part: str = "config", **kwargs: Any) -> Any:
    """Call the ``_target_`` of a config node with its other keys plus `kwargs`.

    Args:
        node: a mapping with ``_target_`` (a dotted name under ``captioning.models``).
        part: the config section, for error messages.
        **kwargs: run-time arguments (vocabulary size, feature sizes), added to the node's.

    Returns:
        What the target returns.
    """
    factory = resolve_target(node, part=part)
    args = {k: v for k, v in node.items() if not k.startswith("_")}
    try:
        return factory(**args, **kwargs)
    except TypeError as exc:
        raise CaptioningError(
            f"{part} config for {node['_target_']} does not fit its arguments: {exc}"
        ) from None


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


def build_model(config: Mapping[str, Any], *, vocab_size: int) -> CaptionModel:
    """Build the model a run config describes.

    Args:
        config: a plain mapping with ``encoder`` and ``decoder`` nodes (``_target_`` + kwargs).
        vocab_size: size of the vocabulary the decoder predicts.

    Returns:
        The (randomly initialised, or encoder-pretrained) model.
    """
    for key in ("encoder", "decoder"):
        if not isinstance(config.get(key), Mapping):
            raise CaptioningError(f"config has no '{key}' section with a _target_")
    encoder = instantiate(config["encoder"], part="encoder")
    decoder = instantiate(
        config["decoder"],
        part="decoder",
        vocab_size=vocab_size,
        vector_dim=encoder.vector_dim,
        grid_dim=encoder.grid_dim,
    )
    return CaptionModel(encoder, decoder)
