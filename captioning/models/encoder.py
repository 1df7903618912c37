"""VGG image encoders: a global ``vector`` (fc7) and a spatial ``grid`` (last conv block).

Show-and-Tell / neuraltalk2 decoders use ``vector``; Show-Attend-and-Tell attends over
``grid``. Torchvision VGGs are built with torchvision itself and then split, so torchvision
state dicts (downloaded or local) load unchanged; ``vgg_tiny`` is a narrow VGG-style stack for
CPU experiments.
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import NamedTuple, Protocol

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from captioning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from captioning.errors import CaptioningError

__all__ = [
    "EncoderOutput",
    "VGGBuilder",
    "VGGEncoder",
    "preprocess_from_weights",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "vgg_tiny",
]

logger = logging.getLogger(__name__)

_PATH_SUFFIXES = (".pt", ".pth")
# torchvision recipe: resize the shorter side to 256, center-crop 224.
_RESIZE_RATIO = 256 / 224


class EncoderOutput(NamedTuple):
    """What an encoder returns for a batch of images.

    Attributes:
        vector: ``(B, D_v)`` global feature: fc7 after its ReLU (dropout applied only in train
            mode, and not at all while the encoder is frozen).
        grid: ``(B, L, D_g)`` output of the last conv block before its final max-pool,
            flattened row-major (VGG-16 at 224 px: 14x14x512 -> ``L=196``, ``D_g=512``).
    """

    vector: Tensor
    grid: Tensor


def _out_side(side: int, layer: nn.Module) -> int:
    """Spatial side after a Conv2d / MaxPool2d (other layers keep it)."""
    if not isinstance(layer, nn.Conv2d | nn.MaxPool2d):
        return side
    k, s, p, d = (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    k, s, p, d = (v[0] if isinstance(v, tuple) else v for v in (k, s, p, d))
    return (side + 2 * p - d * (k - 1) - 1) // s + 1


class VGGEncoder(nn.Module):
    """A VGG split into ``features`` (conv blocks), ``avgpool`` and ``classifier`` (fc6, fc7).

    Module names follow torchvision (``features.0.weight``, ``classifier.3.bias``, ...), so the
    encoder's state dict is a torchvision VGG state dict without the fc8 head
    (``classifier.6``).

    Args:
        features: Conv blocks separated by ``MaxPool2d``; must end with a ``MaxPool2d``.
        avgpool: Pooling between the last max-pool and the classifier.
        classifier: ``fc6, ReLU, Dropout, fc7, ReLU`` (torchvision ``classifier[:5]``).
        preprocess: The input contract (sizes, mean, std) for :mod:`captioning.data.transforms`.
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
        convs = [layer for layer in layers if isinstance(layer, nn.Conv2d)]
        linears = [layer for layer in classifier if isinstance(layer, nn.Linear)]
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier
        self.preprocess = preprocess
        self.image_size = image_size
        self.grid_dim: int = convs[-1].out_channels
        self.vector_dim: int = linears[-1].out_features
        # block k (1-based) = layers after pool k-1 up to and including pool k
        starts = [0, *(p + 1 for p in pools[:-1])]
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
        """Number of conv blocks (max-pool separated), e.g. 5 for torchvision VGGs."""
        return len(self._blocks)

    @property
    def frozen(self) -> bool:
        """``True`` when no parameter requires a gradient."""
        return not any(p.requires_grad for p in self.parameters())

    def set_trainable(self, trainable: bool, fine_tune_from: int | None = None) -> None:
        """Choose which parameters learn.

        * ``trainable=False``: everything is frozen (``requires_grad=False``); the encoder is
          a fixed feature extractor and :meth:`train` keeps all its layers in eval mode
          (no dropout, BatchNorm running statistics), so its outputs are deterministic.
        * ``trainable=True, fine_tune_from=None``: everything learns.
        * ``trainable=True, fine_tune_from=k``: conv blocks ``k..num_blocks`` (1-based,
          blocks separated by max-pools: 1..5 for torchvision VGGs) and the fc layers learn;
          blocks ``1..k-1`` are frozen and their BatchNorm layers stay in eval mode.

        Args:
            trainable: Whether any parameter learns.
            fine_tune_from: First conv block that learns (only with ``trainable=True``).

        Raises:
            CaptioningError: ``fine_tune_from`` is out of range or given with
                ``trainable=False``.
        """
        if fine_tune_from is not None:
            if not trainable:
                raise CaptioningError(
                    f"fine_tune_from={fine_tune_from} needs trainable=True; set both or neither"
                )
            if not 1 <= fine_tune_from <= self.num_blocks:
                raise CaptioningError(
                    f"fine_tune_from={fine_tune_from} is out of range; use a conv block "
                    f"index from 1 to {self.num_blocks}"
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
        if mode and self.frozen:
            for child in self.children():
                child.train(False)
        elif mode:
            for module in self.features.modules():
                is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
                if is_bn and not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self

    def forward(self, images: Tensor) -> EncoderOutput:
        """Encode a batch of normalised images.

        Args:
            images: ``(B, 3, H, W)`` float tensor, preprocessed as :attr:`preprocess` says.

        Returns:
            :class:`EncoderOutput` with ``vector (B, vector_dim)`` and ``grid (B, L, grid_dim)``
            where ``L = grid_size`` at ``H = W = image_size``.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise CaptioningError(
                f"encoder expects images of shape (B, 3, H, W), got {tuple(images.shape)}; "
                "batch RGB images with the encoder's transform"
            )
        fmap = images
        for layer in itertools.islice(self.features, len(self.features) - 1):
            fmap = layer(fmap)  # (B, D_g, h, w): last conv block before its final max-pool
        grid = fmap.flatten(2).transpose(1, 2).contiguous()  # (B, D_g, h*w) -> (B, L, D_g)
        pooled = self.avgpool(self.features[-1](fmap))  # (B, D_g, s, s)
        vector = self.classifier(pooled.flatten(1))  # (B, D_g*s*s) -> (B, D_v)
        return EncoderOutput(vector=vector, grid=grid)


def preprocess_from_weights(weights: WeightsEnum, image_size: int | None = None) -> Preprocess:
    """Read resize/crop sizes and mean/std from a torchvision weights entry's ``transforms()``.

    Nothing is downloaded: only the transform metadata is read.

    Args:
        weights: A torchvision weights enum member, e.g. ``VGG16_Weights.IMAGENET1K_V1``.
        image_size: Crop size to use instead of the weights' (the resize size is scaled by
            the same factor, e.g. 448 -> resize 512); ``None`` keeps the weights' sizes.

    Returns:
        The :class:`Preprocess` matching those weights.
    """
    tf = weights.transforms()
    crop, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
    if image_size is not None and image_size != crop:
        resize, crop = round(image_size * resize / crop), image_size
    mean = tuple(float(m) for m in tf.mean)
    std = tuple(float(s) for s in tf.std)
    return Preprocess(resize_size=resize, crop_size=crop, mean=mean, std=std)  # type: ignore[arg-type]


def _default_preprocess(image_size: int, *, crop: bool = True) -> Preprocess:
    """ImageNet statistics at ``image_size`` when no weights metadata is available."""
    resize = round(image_size * _RESIZE_RATIO) if crop else image_size
    return Preprocess(resize, image_size, IMAGENET_MEAN, IMAGENET_STD, crop=crop)


def _is_path(weights: str | os.PathLike[str]) -> bool:
    """A local file rather than a torchvision weights name."""
    if isinstance(weights, os.PathLike):
        return True
    return (
        Path(weights).is_file()
        or "/" in weights
        or os.sep in weights
        or weights.lower().endswith(_PATH_SUFFIXES)
    )


def _resolve_enum(model_name: str, weights: str | WeightsEnum) -> WeightsEnum:
    """``"DEFAULT"``, ``"IMAGENET1K_V1"``, ``"VGG16_Weights.IMAGENET1K_V1"`` or a member."""
    enum_cls = torchvision.models.get_model_weights(model_name)
    if isinstance(weights, WeightsEnum):
        if not isinstance(weights, enum_cls):
            raise CaptioningError(
                f"weights {weights} do not fit {model_name}; use a {enum_cls.__name__} member"
            )
        return weights
    prefix, _, member = weights.rpartition(".")
    names = ", ".join(enum_cls.__members__)
    if (prefix and prefix != enum_cls.__name__) or member not in enum_cls.__members__:
        raise CaptioningError(
            f"unknown weights {weights!r} for {model_name}; use None, a local .pt/.pth "
            f"state-dict path or one of: {names}"
        )
    return enum_cls[member]


def _load_state_dict(model: nn.Module, path: Path, *, optional_prefix: str | None) -> None:
    """Load a local state-dict file into ``model`` strictly (``optional_prefix`` may be missing)."""
    if not path.is_file():
        raise CaptioningError(f"weights file {path} does not exist; check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / unsupported-object errors
        msg = " ".join(str(exc).split())[:200]
        raise CaptioningError(f"weights file {path} is not a loadable state dict ({msg})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CaptioningError(
            f"weights file {path} does not hold a state dict of tensors; "
            "save it with torch.save(model.state_dict(), path)"
        )
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    missing = [k for k in missing if not (optional_prefix and k.startswith(optional_prefix))]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{what} {len(keys)} (e.g. {keys[0]})"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        )
        raise CaptioningError(
            f"weights file {path} does not match {type(model).__name__} keys: {details}; "
            "use a state dict saved from the same architecture"
        )
    model.load_state_dict(state, strict=False)
    logger.info("loaded encoder weights from %s", path)


def _torchvision_vgg(
    arch: str,
    weights: str | os.PathLike[str] | WeightsEnum | None,
    batch_norm: bool,
    trainable: bool,
    fine_tune_from: int | None,
    image_size: int,
) -> VGGEncoder:
    """Build a torchvision VGG (optionally pretrained), then split it into a VGGEncoder."""
    name = f"{arch}_bn" if batch_norm else arch
    enum: WeightsEnum | None = None
    path: Path | None = None
    if isinstance(weights, WeightsEnum) or (weights is not None and not _is_path(weights)):
        enum = _resolve_enum(name, weights)
        logger.info("building %s with torchvision weights %s (may download)", name, enum)
        if enum.name.endswith("FEATURES"):
            logger.warning("%s has no valid classifier: `vector` is meaningless, use `grid`", enum)
    elif weights is not None:
        path = Path(weights)
    elif not trainable:
        logger.warning("%s has random weights and is frozen: its features are noise", name)
    model = getattr(torchvision.models, name)(weights=enum)
    if path is not None:
        _load_state_dict(model, path, optional_prefix="classifier.6.")
    preprocess = (
        preprocess_from_weights(enum, image_size) if enum else _default_preprocess(image_size)
    )
    encoder = VGGEncoder(
        model.features,
        model.avgpool,
        model.classifier[:5],  # fc6, ReLU, Dropout, fc7, ReLU (keys 0..4 kept)
        preprocess=preprocess,
        image_size=image_size,
    )
    encoder.set_trainable(trainable, fine_tune_from)
    return encoder


_Weights = str | os.PathLike[str] | WeightsEnum | None


class VGGBuilder(Protocol):
    """Signature shared by :func:`vgg11`, :func:`vgg13`, :func:`vgg16` and :func:`vgg19`."""

    def __call__(
        self,
        *,
        weights: _Weights = None,
        batch_norm: bool = False,
        trainable: bool = False,
        fine_tune_from: int | None = None,
        image_size: int = 224,
    ) -> VGGEncoder: ...


_BUILDER_DOC = """{title} encoder (torchvision ``{arch}``/``{arch}_bn``): fc7 ``vector`` (4096), conv5 ``grid`` (512).

    At 224 px the grid is 14x14 (``L=196``); at 448 px 28x28 (``L=784``).

    Args:
        weights: ``None`` (random init); a torchvision weights name for this architecture
            (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ``"{title_enum}_Weights.IMAGENET1K_V1"`` or the
            enum member - downloads unless cached; preprocessing is read from its
            ``transforms()``); or a local state-dict file (an existing file, or a string
            containing ``/`` or ending in ``.pt``/``.pth``) saved from
            ``torchvision.models.{arch}[_bn]().state_dict()`` (``classifier.6`` may be absent;
            ImageNet mean/std are assumed).
        batch_norm: Use the ``{arch}_bn`` variant.
        trainable: Whether the encoder learns (see :meth:`VGGEncoder.set_trainable`).
        fine_tune_from: First conv block (1..5) that learns; earlier blocks stay frozen.
        image_size: Input crop side; the grid is ``(image_size // 16) ** 2``.

    Returns:
        The :class:`VGGEncoder`.
    """


def _vgg_builder(arch: str) -> VGGBuilder:
    """Make the public keyword-only builder for one torchvision VGG depth."""

    def build(
        *,
        weights: _Weights = None,
        batch_norm: bool = False,
        trainable: bool = False,
        fine_tune_from: int | None = None,
        image_size: int = 224,
    ) -> VGGEncoder:
        return _torchvision_vgg(arch, weights, batch_norm, trainable, fine_tune_from, image_size)

    build.__name__ = build.__qualname__ = arch
    build.__module__ = __name__
    title = arch.upper().replace("VGG", "VGG-")
    build.__doc__ = _BUILDER_DOC.format(title=title, arch=arch, title_enum=arch.upper())
    return build


vgg11 = _vgg_builder("vgg11")
vgg13 = _vgg_builder("vgg13")
vgg16 = _vgg_builder("vgg16")
vgg19 = _vgg_builder("vgg19")


def _make_layers(cfg: list[int | str], *, batch_norm: bool = True) -> nn.Sequential:
    """torchvision-style ``make_layers``: ints are conv3x3(+BN)+ReLU widths, ``"M"`` max-pools."""
    layers: list[nn.Module] = []
    in_channels = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out = int(v)
        layers.append(nn.Conv2d(in_channels, out, kernel_size=3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=True))
        in_channels = out
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
) -> VGGEncoder:
    """A narrow 4-block VGG (conv3x3+BN+ReLU) for CPU experiments on small images.

    ``cfg = [w, "M", 2w, "M", 4w, "M", 4w, "M"]``; ``grid`` is block 4 before its max-pool
    (64 px: 8x8 -> ``L=64``, ``D_g=4w``). ``vector`` keeps spatial layout: max-pool ->
    ``AdaptiveAvgPool2d(4)`` -> flatten (``4w*16``) -> fc6 -> ReLU -> Dropout -> fc7 -> ReLU,
    with no global average pool, so left/right/above/below survive into it. Preprocessing:
    the whole image resized to ``image_size`` square (no crop: objects near the borders
    matter), ImageNet mean/std.

    Args:
        weights: ``None`` (random init) or a local state-dict file saved from a ``vgg_tiny``
            encoder with the same ``width`` and ``vector_dim``.
        width: Channels of block 1 (blocks 2-4 have ``2w, 4w, 4w``).
        image_size: Input side (at least 16 px); ``grid_size = (image_size // 8) ** 2``.
        vector_dim: Width of fc6 and fc7 (``D_v``).
        trainable: Whether the encoder learns (see :meth:`VGGEncoder.set_trainable`).
        fine_tune_from: First conv block (1..4) that learns; earlier ones stay frozen.
        dropout: Dropout probability between fc6 and fc7 (train mode only).

    Returns:
        The :class:`VGGEncoder`.
    """
    if isinstance(weights, str) and not _is_path(weights):
        raise CaptioningError(
            f"vgg_tiny has no torchvision weights ({weights!r}); pass None or a local "
            ".pt/.pth state-dict path"
        )
    if width < 1 or vector_dim < 1:
        raise CaptioningError(
            f"vgg_tiny needs width >= 1 and vector_dim >= 1, got {width}, {vector_dim}"
        )
    cfg: list[int | str] = [width, "M", 2 * width, "M", 4 * width, "M", 4 * width, "M"]
    features = _make_layers(cfg, batch_norm=True)
    pooled = 4
    classifier = nn.Sequential(
        nn.Linear(4 * width * pooled * pooled, vector_dim),  # fc6
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
        nn.Linear(vector_dim, vector_dim),  # fc7
        nn.ReLU(inplace=True),
    )
    for module in features.modules():  # torchvision VGG init for conv/BN; nn.Linear default
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    encoder = VGGEncoder(
        features,
        nn.AdaptiveAvgPool2d((pooled, pooled)),
        classifier,
        preprocess=_default_preprocess(image_size, crop=False),
        image_size=image_size,
    )
    if weights is not None:
        _load_state_dict(encoder, Path(weights), optional_prefix=None)
    encoder.set_trainable(trainable, fine_tune_from)
    return encoder
