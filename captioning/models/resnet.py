"""ResNet image encoders (torchvision ResNet-50/101/152): the encoder of the Show-Attend-Tell
tutorial (sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning) and most captioning code since 2017.

``grid`` is the last stage's map (``layer4``, 2048 channels) adaptively average-pooled to
``grid_size x grid_size`` (14 by default, as the tutorial) and flattened row-major to
``(L, 2048)``; ``vector`` is the global average of that map (torchvision's ``avgpool``, 2048),
what Show-and-Tell style decoders see. The modules keep torchvision's names (``conv1``,
``layer4.2.conv3``): a torchvision ResNet's state dict loads unchanged (without ``fc``).

Differences from the tutorial's ``Encoder``: a frozen encoder stays in eval mode (the tutorial
calls ``encoder.train()`` even when it does not fine-tune, so its BatchNorm running statistics
drift with COCO batches); and ``vector`` is computed as well (the tutorial has no use for it).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn
from torchvision.models import ResNet

from captioning.contracts import EncoderOutput
from captioning.data.transforms import Preprocess, imagenet_preprocess, preprocess_from_weights
from captioning.errors import CaptioningError
from captioning.models.stages import StagedEncoder
from captioning.models.weights import Weights, build_torchvision, load_state_dict_file

__all__ = ["ResNetEncoder", "check_images", "resnet50", "resnet101", "resnet152"]


def check_images(images: Tensor) -> None:
    """One line for a batch that is not ``(B, 3, H, W)``."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise CaptioningError(
            f"encoder expects images of shape (B, 3, H, W), got {tuple(images.shape)}; "
            "batch RGB images made with the encoder's transform"
        )


class ResNetEncoder(StagedEncoder):
    """A torchvision ResNet without its ``fc``: stem, ``layer1`` .. ``layer4``, then pooling.

    Args:
        model: the torchvision ResNet (its weights already loaded).
        arch: its name (``"resnet101"``), for the feature cache and messages.
        grid_size: side S of the pooled grid (``L = S * S``); ``None`` keeps ``layer4``'s own
            map (``image_size / 32`` a side: 7 at 224 px).
        preprocess: Input contract (sizes, mean, std) for :mod:`captioning.data.transforms`.
        image_size: The configured input side.
    """

    def __init__(
        self,
        model: ResNet,
        *,
        arch: str,
        grid_size: int | None,
        preprocess: Preprocess,
        image_size: int,
    ) -> None:
        super().__init__()
        if grid_size is not None and grid_size < 1:
            raise CaptioningError(f"grid_size={grid_size} must be >= 1 (or null: layer4's map)")
        if image_size < 32:
            raise CaptioningError(f"image_size={image_size} is too small for a ResNet; use >= 32")
        self.conv1, self.bn1, self.relu, self.maxpool = (
            model.conv1,
            model.bn1,
            model.relu,
            model.maxpool,
        )
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            model.layer1,
            model.layer2,
            model.layer3,
            model.layer4,
        )
        self.pool = nn.AdaptiveAvgPool2d(grid_size) if grid_size is not None else nn.Identity()
        self.stage_names = ["layer1", "layer2", "layer3", "layer4"]
        self.arch = arch
        self.preprocess = preprocess
        self.image_size = image_size
        self.vector_dim: int = model.fc.in_features  # 2048 (512 for ResNet-18/34)
        self.grid_dim: int = model.fc.in_features
        native = -(-image_size // 32)  # stride 32, padded convolutions round up
        self.grid_side: int = grid_size if grid_size is not None else native
        self.num_regions: int = self.grid_side**2

    def forward(self, images: Tensor) -> EncoderOutput:
        """Encode a batch of normalised images.

        Args:
            images: ``(B, 3, H, W)`` float tensor, preprocessed as :attr:`preprocess` says.

        Returns:
            ``vector (B, 2048)`` (global average of ``layer4``) and ``grid (B, S*S, 2048)``
            (``layer4`` pooled to ``S x S``, row-major).
        """
        check_images(images)
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))  # (B, 64, H/4, W/4)
        fmap = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 2048, h, w)
        vector = fmap.mean(dim=(2, 3))  # (B, 2048): torchvision's avgpool + flatten
        grid = self.pool(fmap)  # (B, 2048, S, S)
        grid = grid.flatten(2).transpose(1, 2).contiguous()  # (B, 2048, S*S) -> (B, L, 2048)
        return EncoderOutput(vector=vector, grid=grid)


def _torchvision_resnet(
    arch: str,
    weights: Weights,
    grid_size: int | None,
    image_size: int,
    crop: bool,
    trainable: bool,
    fine_tune_from: int | None,
) -> ResNetEncoder:
    """Build torchvision ResNet `arch` (optionally pretrained) and wrap it."""
    model, enum = build_torchvision(arch, weights, trainable=trainable)
    if weights is not None and enum is None:
        load_state_dict_file(model, Path(weights), arch, optional="fc.")
    if enum is not None:
        preprocess = preprocess_from_weights(enum, image_size, crop=crop)
    else:
        preprocess = imagenet_preprocess(image_size, crop=crop)
    encoder = ResNetEncoder(
        model, arch=arch, grid_size=grid_size, preprocess=preprocess, image_size=image_size
    )
    encoder.set_trainable(trainable, fine_tune_from)
    return encoder


def resnet50(
    *,
    weights: Weights = None,
    grid_size: int | None = 14,
    image_size: int = 224,
    crop: bool = True,
    trainable: bool = False,
    fine_tune_from: int | None = None,
) -> ResNetEncoder:
    """ResNet-50 encoder (torchvision ``resnet50``): ``vector`` 2048, ``grid`` S x S x 2048.

    Args:
        weights: ``None`` (random init); a torchvision weights name for this architecture
            (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ``"ResNet50_Weights.IMAGENET1K_V2"`` or the enum
            member: downloads unless cached; preprocessing is read from its ``transforms()``);
            or a local state-dict file (an existing file, or a string containing ``/`` or ending
            in ``.pt``/``.pth``) saved from ``torchvision.models.resnet50()`` (``fc`` may be
            absent; ImageNet mean/std are assumed).
        grid_size: Side S of the grid ``layer4`` is adaptively pooled to (``L = S * S``; the
            tutorial's 14); ``None``: ``layer4``'s own map (7 x 7 at 224 px).
        image_size: Input side (the crop; ``crop=False``: the whole image resized square).
        crop: ``True``: shorter side resized, center crop (torchvision's recipe); ``False``: the
            whole image resized to ``image_size`` square (the tutorial's 256 x 256).
        trainable: Whether the encoder learns (see :meth:`StagedEncoder.set_trainable`).
        fine_tune_from: First stage that learns (1..4 = torchvision's ``layer1`` .. ``layer4``;
            the tutorial's 2); the stem and earlier stages stay frozen.

    Returns:
        The :class:`ResNetEncoder`.
    """
    return _torchvision_resnet(
        "resnet50", weights, grid_size, image_size, crop, trainable, fine_tune_from
    )


def resnet101(
    *,
    weights: Weights = None,
    grid_size: int | None = 14,
    image_size: int = 224,
    crop: bool = True,
    trainable: bool = False,
    fine_tune_from: int | None = None,
) -> ResNetEncoder:
    """ResNet-101 encoder (torchvision ``resnet101``, the tutorial's); see :func:`resnet50`.

    Args:
        weights: ``None``, a ``ResNet101_Weights`` name or member, or a local state-dict path.
        grid_size: Side S of the pooled grid (None: ``layer4``'s own map).
        image_size: Input side.
        crop: Center crop (``True``) or the whole image resized square (``False``).
        trainable: Whether the encoder learns.
        fine_tune_from: First stage (1..4 = ``layer1`` .. ``layer4``) that learns.

    Returns:
        The :class:`ResNetEncoder`.
    """
    return _torchvision_resnet(
        "resnet101", weights, grid_size, image_size, crop, trainable, fine_tune_from
    )


def resnet152(
    *,
    weights: Weights = None,
    grid_size: int | None = 14,
    image_size: int = 224,
    crop: bool = True,
    trainable: bool = False,
    fine_tune_from: int | None = None,
) -> ResNetEncoder:
    """ResNet-152 encoder (torchvision ``resnet152``); see :func:`resnet50`.

    Args:
        weights: ``None``, a ``ResNet152_Weights`` name or member, or a local state-dict path.
        grid_size: Side S of the pooled grid (None: ``layer4``'s own map).
        image_size: Input side.
        crop: Center crop (``True``) or the whole image resized square (``False``).
        trainable: Whether the encoder learns.
        fine_tune_from: First stage (1..4 = ``layer1`` .. ``layer4``) that learns.

    Returns:
        The :class:`ResNetEncoder`.
    """
    return _torchvision_resnet(
        "resnet152", weights, grid_size, image_size, crop, trainable, fine_tune_from
    )
