"""``encoder=precomputed``: an encoder with no parameters, for features extracted beforehand.

The data set's items are already :class:`~captioning.contracts.EncoderOutput` rows (read by
:mod:`captioning.data.regions` from ``data.features``), so training and evaluation skip the
encoder exactly as they do for the frozen-encoder feature cache. The encoder only carries the
feature sizes the decoder is built for (filled from the first image's files when a run starts,
and stored in checkpoints so that they rebuild the same model).

There is no detector here: a raw image cannot be encoded, and :meth:`PrecomputedEncoder.forward`
says so in one line.
"""

from __future__ import annotations

from torch import Tensor, nn

from captioning.contracts import EncoderOutput
from captioning.data.transforms import Preprocess, imagenet_preprocess
from captioning.errors import CaptioningError

__all__ = ["TARGET", "PrecomputedEncoder", "precomputed"]

#: the ``_target_`` of ``encoder=precomputed`` (conf/encoder/precomputed.yaml)
TARGET = "captioning.models.precomputed.precomputed"


class PrecomputedEncoder(nn.Module):
    """Stands for the detector that extracted the features; holds their sizes only.

    Args:
        vector_dim: D_v, the global feature's size.
        grid_dim: D_g, a region feature's size (box features included).
    """

    #: the run reads ``data.features`` instead of images
    reads_features = True

    def __init__(self, vector_dim: int, grid_dim: int) -> None:
        super().__init__()
        self.vector_dim, self.grid_dim = int(vector_dim), int(grid_dim)
        #: unused (no image is ever preprocessed for it); present because every encoder has one
        self.preprocess: Preprocess = imagenet_preprocess(224)

    def forward(self, images: Tensor) -> EncoderOutput:
        """Refuse: images cannot be encoded without the detector that made the features."""
        raise CaptioningError(
            "this model reads pre-extracted region features (encoder=precomputed) and cannot "
            "encode an image: evaluate it on a data set with data.features set "
            "(tools/evaluate.py), or caption a features file with tools/caption.py --features"
        )


def precomputed(
    vector_dim: int | None = None, grid_dim: int | None = None, trainable: bool = False
) -> PrecomputedEncoder:
    """Build the :class:`PrecomputedEncoder`.

    Args:
        vector_dim: D_v (null in the config: read from the first image's files by the run).
        grid_dim: D_g (null: likewise).
        trainable: must be false (there is nothing to train).

    Returns:
        The encoder.
    """
    if trainable:
        raise CaptioningError("encoder=precomputed has no parameters: set encoder.trainable=false")
    if vector_dim is None or grid_dim is None:
        raise CaptioningError(
            "encoder=precomputed needs the feature sizes: a training run reads them from "
            "data.features (set data.features.att_dir), or set encoder.vector_dim and "
            "encoder.grid_dim"
        )
    return PrecomputedEncoder(vector_dim, grid_dim)
