"""VGG image encoders: a global ``vector`` (fc7) and a spatial ``grid`` (last conv block).

Kept as one file (about 390 lines): the VGG family (torchvision's models split into vector and
grid, ``vgg_tiny``). Other families have modules of their own (:mod:`captioning.models.resnet`,
:mod:`captioning.models.backbone`); all take ``weights`` through :mod:`captioning.models.weights`.

Show-and-Tell / neuraltalk2 decoders use ``vector``; Show-Attend-and-Tell attends over
``grid``. Torchvision VGGs are built by torchvision and then split, so torchvision state dicts
(downloaded or local) load unchanged; ``vgg_tiny`` is a narrow VGG-style stack for CPU work.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from torch import Tensor, nn

from captioning.contracts import EncoderOutput
from captioning.data.transforms import Preprocess, imagenet_preprocess, preprocess_from_weights
from captioning.errors import CaptioningError
from captioning.models.stages import keep_frozen_parts_in_eval
from captioning.models.weights import (
    Weights,
    build_torchvision,
    is_weights_file,
    load_state_dict_file,
)

__all__ = [
    "VGGEncoder",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "vgg_tiny",
]


def _out_side(side: int, layer: nn.Module) -> int:
    """Spatial side after a Conv2d / MaxPool2d (other layers keep it)."""
    if not isinstance(layer, nn.Conv2d | nn.MaxPool2d):
        return side
    k, s, p, d = (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    k, s, p, d = (v[0] if isinstance(v, tuple) else v for v in (k, s, p, d))
    return (side + 2 * p - d * (k - 1) - 1) // s + 1


class VGGEncoder(nn.Module):
    """A VGG split into ``features`` (conv blocks), ``avgpool`` and ``classifier`` (fc6, fc7).

    Module names follow torchvision (``features.0.weight``, ``classifier.3.bias``), so the
    state dict is a torchvision VGG's without the fc8 head (``classifier.6``).

    Args:
        features: Conv blocks separated by ``MaxPool2d``; must end with a ``MaxPool2d``.
        avgpool: Pooling between the last max-pool and the classifier.
        classifier: ``fc6, ReLU, Dropout, fc7, ReLU`` (torchvision ``classifier[:5]``).
        preprocess: Input contract (sizes, mean, std) for :mod:`captioning.data.transforms`.
        image_size: The configured input side; sets :attr:`grid_size`.
    """

    def __init__(
        self,
        features: nn.Sequential,
        avgpool: nn.Module,
        classifier: nn.Sequential,
        *,
        preprocess: Preprocess,
        image_size: int,
    ) -> None:
        super().__init__()
        layers = list(features)
        pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
        if not pools or pools[-1] != len(layers) - 1:
            raise CaptioningError("VGGEncoder features must end with a MaxPool2d; fix the cfg")
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier
        self.preprocess = preprocess
        self.image_size = image_size
        self.grid_dim: int = [m for m in layers if isinstance(m, nn.Conv2d)][-1].out_channels
        self.vector_dim: int = [m for m in classifier if isinstance(m, nn.Linear)][-1].out_features
        starts = [0, *(p + 1 for p in pools[:-1])]  # block k = after pool k-1 .. pool k
        self._blocks = [layers[a : b + 1] for a, b in zip(starts, pools, strict=True)]
        side = image_size
        for layer in layers[:-1]:
            side = _out_side(side, layer)
        if side < 1 or _out_side(side, layers[-1]) < 1:
            raise CaptioningError(
                f"image_size={image_size} is too small for {len(pools)} max-pools; "
                f"use at least {2 ** len(pools)} px"
            )
        self.grid_size: int = side * side

    @property
    def num_blocks(self) -> int:
        """Number of conv blocks (separated by max-pools): 5 for torchvision VGGs."""
        return len(self._blocks)

    @property
    def frozen(self) -> bool:
        """``True`` when no parameter requires a gradient."""
        return not any(p.requires_grad for p in self.parameters())

    def set_trainable(self, trainable: bool, fine_tune_from: int | None = None) -> None:
        """Choose which parameters learn.

        * ``trainable=False``: everything is frozen (``requires_grad=False``). The encoder is
          a fixed feature extractor: :meth:`train` keeps all its layers in eval mode (no
          dropout, BatchNorm running statistics), so its outputs are deterministic/cacheable.
        * ``trainable=True``: everything learns.
        * ``trainable=True, fine_tune_from=k``: conv blocks ``k..num_blocks`` (1-based, blocks
          separated by max-pools: 1..5 for torchvision VGGs) and the fc layers learn; blocks
          ``1..k-1`` are frozen and their BatchNorm layers stay in eval mode.

        Args:
            trainable: Whether any parameter learns.
            fine_tune_from: First conv block that learns (only with ``trainable=True``).

        Raises:
            CaptioningError: ``fine_tune_from`` is out of range or given without ``trainable``.
        """
        if fine_tune_from is not None and not trainable:
            raise CaptioningError(
                f"fine_tune_from={fine_tune_from} needs trainable=True; set both or neither"
            )
        if fine_tune_from is not None and not 1 <= fine_tune_from <= self.num_blocks:
            raise CaptioningError(
                f"fine_tune_from={fine_tune_from} is out of range; use a conv block index "
                f"from 1 to {self.num_blocks}"
            )
        self.requires_grad_(trainable)
        for block in self._blocks[: (fine_tune_from or 1) - 1]:
            for layer in block:
                layer.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> VGGEncoder:
        """Set train/eval mode, keeping frozen parts in eval mode (see :meth:`set_trainable`).

        Args:
            mode: ``True`` for training, ``False`` for evaluation.

        Returns:
            ``self``.
        """
        super().train(mode)
        keep_frozen_parts_in_eval(self, mode)  # (fc BatchNorms learn whenever the encoder does)
        return self

    def forward(self, images: Tensor) -> EncoderOutput:
        """Encode a batch of normalised images.

        Args:
            images: ``(B, 3, H, W)`` float tensor, preprocessed as :attr:`preprocess` says.

        Returns:
            ``vector (B, vector_dim)`` and ``grid (B, L, grid_dim)``; ``L = grid_size`` when
            ``H = W = image_size``.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise CaptioningError(
                f"encoder expects images of shape (B, 3, H, W), got {tuple(images.shape)}; "
                "batch RGB images made with the encoder's transform"
            )
        fmap = images
        for layer in itertools.islice(self.features, len(self.features) - 1):
            fmap = layer(fmap)  # ends as (B, D_g, h, w): last block before its max-pool
        grid = fmap.flatten(2).transpose(1, 2).contiguous()  # (B, D_g, h*w) -> (B, L, D_g)
        pooled = self.avgpool(self.features[-1](fmap))  # (B, D_g, s, s)
        vector = self.classifier(pooled.flatten(1))  # (B, D_g*s*s) -> (B, D_v)
        return EncoderOutput(vector=vector, grid=grid)


def _torchvision_vgg(
    arch: str,
    weights: Weights,
    batch_norm: bool,
    trainable: bool,
    fine_tune_from: int | None,
    image_size: int,
) -> VGGEncoder:
    """Build a torchvision VGG (optionally pretrained), then split it into a VGGEncoder."""
    name = f"{arch}_bn" if batch_norm else arch
    model, enum = build_torchvision(name, weights, trainable=trainable)
    if weights is not None and enum is None:
        load_state_dict_file(model, Path(weights), name, optional="classifier.6.")
    preprocess = preprocess_from_weights(enum, image_size) if enum is not None else None
    encoder = VGGEncoder(
        model.features,
        model.avgpool,
        model.classifier[:5],  # fc6, ReLU, Dropout, fc7, ReLU (keys 0..4 kept)
        preprocess=preprocess or imagenet_preprocess(image_size),
        image_size=image_size,
    )
    encoder.set_trainable(trainable, fine_tune_from)
    return encoder


def vgg11(
    *,
    weights: Weights = None,
    batch_norm: bool = False,
    trainable: bool = False,
    fine_tune_from: int | None = None,
    image_size: int = 224,
) -> VGGEncoder:
    """VGG-11 encoder (torchvision ``vgg11``/``vgg11_bn``): ``vector`` fc7 4096, ``grid`` 512.

    Args:
        weights: ``None`` (random init); a torchvision weights name for this architecture
            (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ``"VGG11_Weights.IMAGENET1K_V1"`` or the enum
            member: downloads unless cached, preprocessing is read from its ``transforms()``);
            or a local state-dict file (an existing file, or a string containing ``/`` or
            ending in ``.pt``/``.pth``) saved from ``torchvision.models.vgg11[_bn]()``
            (``classifier.6`` may be absent; ImageNet mean/std are assumed).
        batch_norm: Use the ``_bn`` variant.
        trainable: Whether the encoder learns (see :meth:`VGGEncoder.set_trainable`).
        fine_tune_from: First conv block (1..5) that learns; earlier blocks stay frozen.
        image_size: Input crop side; grid ``L = (image_size // 16) ** 2`` (224: 196, 448: 784).

    Returns:
        The :class:`VGGEncoder`.
    """
    return _torchvision_vgg("vgg11", weights, batch_norm, trainable, fine_tune_from, image_size)


def vgg13(
    *,
    weights: Weights = None,
    batch_norm: bool = False,
    trainable: bool = False,
    fine_tune_from: int | None = None,
    image_size: int = 224,
) -> VGGEncoder:
    """VGG-13 encoder (torchvision ``vgg13``/``vgg13_bn``); see :func:`vgg11`.

    Args:
        weights: ``None``, a ``VGG13[_BN]_Weights`` name or member, or a local state-dict path.
        batch_norm: Use the ``_bn`` variant.
        trainable: Whether the encoder learns.
        fine_tune_from: First conv block (1..5) that learns.
        image_size: Input crop side.

    Returns:
        The :class:`VGGEncoder`.
    """
    return _torchvision_vgg("vgg13", weights, batch_norm, trainable, fine_tune_from, image_size)


def vgg16(
    *,
    weights: Weights = None,
    batch_norm: bool = False,
    trainable: bool = False,
    fine_tune_from: int | None = None,
    image_size: int = 224,
) -> VGGEncoder:
    """VGG-16 encoder (torchvision ``vgg16``/``vgg16_bn``); see :func:`vgg11`.

    Args:
        weights: ``None``, a ``VGG16[_BN]_Weights`` name or member, or a local state-dict path.
        batch_norm: Use the ``_bn`` variant.
        trainable: Whether the encoder learns.
        fine_tune_from: First conv block (1..5) that learns.
        image_size: Input crop side.

    Returns:
        The :class:`VGGEncoder`.
    """
    return _torchvision_vgg("vgg16", weights, batch_norm, trainable, fine_tune_from, image_size)


def vgg19(
    *,
    weights: Weights = None,
    batch_norm: bool = False,
    trainable: bool = False,
    fine_tune_from: int | None = None,
    image_size: int = 224,
) -> VGGEncoder:
    """VGG-19 encoder (torchvision ``vgg19``/``vgg19_bn``); see :func:`vgg11`.

    Args:
        weights: ``None``, a ``VGG19[_BN]_Weights`` name or member, or a local state-dict path.
        batch_norm: Use the ``_bn`` variant.
        trainable: Whether the encoder learns.
        fine_tune_from: First conv block (1..5) that learns.
        image_size: Input crop side.

    Returns:
        The :class:`VGGEncoder`.
    """
    return _torchvision_vgg("vgg19", weights, batch_norm, trainable, fine_tune_from, image_size)


def _make_layers(cfg: list[int | str]) -> nn.Sequential:
    """torchvision-style ``make_layers`` with BN: ints are conv3x3+BN+ReLU, ``"M"`` max-pools."""
    layers: list[nn.Module] = []
    in_channels = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        conv = nn.Conv2d(in_channels, int(v), kernel_size=3, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        layers += [conv, nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
        in_channels = int(v)
    return nn.Sequential(*layers)


def vgg_tiny(
    *,
    weights: str | os.PathLike[str] | None = None,
    width: int = 32,
    image_size: int = 64,
    vector_dim: int = 512,
    trainable: bool = True,
    fine_tune_from: int | None = None,
    dropout: float = 0.5,
    fc_batch_norm: bool = True,
) -> VGGEncoder:
    """A narrow 4-block VGG (conv3x3+BN+ReLU) for CPU experiments on small images.

    ``cfg = [w, "M", 2w, "M", 4w, "M", 4w, "M"]``; ``grid`` is block 4 before its max-pool
    (64 px: 8x8 -> ``L=64``, ``D_g=4w``). ``vector`` keeps the spatial layout (no global
    pooling): max-pool -> ``AdaptiveAvgPool2d(4)`` -> flatten ``(4w*16)`` -> fc6 -> BN -> ReLU ->
    Dropout -> fc7 -> BN -> ReLU, so left/right/above/below survive into it. Preprocessing: the whole
    image resized to ``image_size`` square (no crop: objects near borders matter), ImageNet
    mean/std.

    Args:
        weights: ``None`` (random init) or a local state-dict file saved from a ``vgg_tiny``
            encoder with the same ``width`` and ``vector_dim``.
        width: Channels of block 1 (blocks 2-4 have ``2w, 4w, 4w``).
        image_size: Input side (at least 16 px); ``grid_size = (image_size // 8) ** 2``.
        vector_dim: Width of fc6 and fc7 (``D_v``).
        trainable: Whether the encoder learns (see :meth:`VGGEncoder.set_trainable`).
        fine_tune_from: First conv block (1..4) that learns; earlier blocks stay frozen.
        dropout: Dropout probability between fc6 and fc7 (train mode only).
        fc_batch_norm: BatchNorm after fc6 and fc7 (before their ReLU), like the conv blocks.
            Without it, training end to end from scratch with Adam left most fc7 units dead
            (always zero) and `vector` lost the shape information the captions need.

    Returns:
        The :class:`VGGEncoder`.
    """
    if isinstance(weights, str) and not is_weights_file(weights):
        raise CaptioningError(
            f"vgg_tiny has no torchvision weights ({weights!r}); pass None or a local "
            ".pt/.pth state-dict path"
        )
    if width < 1 or vector_dim < 1:
        raise CaptioningError(f"vgg_tiny needs width, vector_dim >= 1, got {width}, {vector_dim}")
    features = _make_layers([width, "M", 2 * width, "M", 4 * width, "M", 4 * width, "M"])
    norm = (lambda: nn.BatchNorm1d(vector_dim)) if fc_batch_norm else nn.Identity
    classifier = nn.Sequential(
        nn.Linear(4 * width * 4 * 4, vector_dim),  # fc6 on the (4w, 4, 4) map
        norm(),
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
        nn.Linear(vector_dim, vector_dim),  # fc7
        norm(),
        nn.ReLU(inplace=True),
    )
    encoder = VGGEncoder(
        features,
        nn.AdaptiveAvgPool2d((4, 4)),
        classifier,
        preprocess=imagenet_preprocess(image_size, crop=False),
        image_size=image_size,
    )
    if weights is not None:
        label = f"vgg_tiny(width={width}, vector_dim={vector_dim})"
        load_state_dict_file(encoder, Path(weights), label, optional=None)
    encoder.set_trainable(trainable, fine_tune_from)
    return encoder
