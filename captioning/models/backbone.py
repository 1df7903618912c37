"""Any torchvision classification model as an encoder, by its registered name.

``encoder=backbone encoder.arch=NAME`` builds ``torchvision.models.get_model(NAME)`` and takes
``grid`` and ``vector`` from named nodes of its graph with torchvision's feature extraction
(``create_feature_extractor``; ``get_graph_node_names`` lists the names). Each family has a
default grid node (the last feature map before the classifier):

* convolutional nets (ResNet, ResNeXt, Wide ResNet, RegNet, ConvNeXt, EfficientNet, MobileNet,
  MNASNet, DenseNet, Swin, MaxViT, ...): the map ``(B, C, h, w)``, optionally adaptively pooled
  to ``grid_size`` a side, flattened row-major to ``grid (B, h*w, C)``; ``vector`` its global
  average (what the classifier's pooling computes);
* ViT: the encoder's output tokens ``(B, 1 + N, D)`` (after its final LayerNorm): the patch
  tokens are ``grid (B, N, D)`` (a square of patches, row-major), the class token ``vector``.

``grid_node`` / ``vector_node`` choose other nodes (a map is averaged, tokens give their first).
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import WeightsEnum
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from captioning.contracts import EncoderOutput
from captioning.data.transforms import Preprocess, imagenet_preprocess, preprocess_from_weights
from captioning.errors import CaptioningError
from captioning.models.resnet import check_images
from captioning.models.stages import StagedEncoder
from captioning.models.weights import (
    Weights,
    build_torchvision,
    is_weights_file,
    load_state_dict_file,
    resolve_weights,
)

__all__ = ["FAMILIES", "BackboneEncoder", "backbone", "classification_models"]

#: name prefix -> (default grid node, module whose children are the stages ``fine_tune_from``
#: counts; "" = the top-level modules that hold parameters). The first matching prefix wins.
FAMILIES: dict[str, tuple[str, str]] = {
    "resnet": ("layer4", "layer*"),
    "resnext": ("layer4", "layer*"),
    "wide_resnet": ("layer4", "layer*"),
    "regnet": ("trunk_output", "trunk_output"),
    "mnasnet": ("layers", "layers"),
    "swin": ("permute", "features"),
    "maxvit": ("blocks", "blocks"),
    "vit": ("encoder", "encoder.layers"),
    "shufflenet": ("conv5", ""),
    "googlenet": ("inception5b", ""),
    "inception": ("Mixed_7c", ""),
    "": ("features", "features"),  # ConvNeXt, EfficientNet, MobileNet, DenseNet, VGG, ...
}


def classification_models() -> list[str]:
    """The registered names of torchvision's classification models."""
    return torchvision.models.list_models(module=torchvision.models)


def _family(arch: str) -> tuple[str, str]:
    return next(v for k, v in FAMILIES.items() if arch.startswith(k))


def _stage_names(extractor: nn.Module, spec: str) -> list[str]:
    """The stage module names: the children of `spec`, or of the root ("", or "layer*")."""
    if spec in ("", "layer*"):
        names = [n for n, m in extractor.named_children() if next(m.parameters(), None) is not None]
        return [n for n in names if n.startswith("layer")] if spec else names
    container = extractor.get_submodule(spec)
    return [
        f"{spec}.{n}"
        for n, m in container.named_children()
        if next(m.parameters(), None) is not None
    ]


class BackboneEncoder(StagedEncoder):
    """A torchvision classifier cut at named nodes (a ``torch.fx`` graph from
    ``create_feature_extractor``; parameter names are torchvision's, e.g. ``features.7.2.block.0``).

    Args:
        extractor: returns ``{"grid": ..., "vector": ...}`` (``"vector"`` optional).
        arch: the torchvision name, for the feature cache and messages.
        stage_names: module names of the stages, in order.
        grid_size: side S the grid is adaptively pooled to (None: the node's own size).
        preprocess: Input contract for :mod:`captioning.data.transforms`.
        image_size: The configured input side.
    """

    def __init__(
        self,
        extractor: nn.Module,
        *,
        arch: str,
        stage_names: list[str],
        grid_size: int | None,
        preprocess: Preprocess,
        image_size: int,
    ) -> None:
        super().__init__()
        if grid_size is not None and grid_size < 1:
            raise CaptioningError(f"grid_size={grid_size} must be >= 1 (or null: the node's map)")
        self.model = extractor
        self.arch = arch
        self.stage_names = [f"model.{n}" for n in stage_names]
        self.pool_side = grid_size
        self.preprocess = preprocess
        self.image_size = image_size
        was_training = extractor.training
        extractor.eval()
        with torch.no_grad():
            probe = self(torch.zeros(1, 3, image_size, image_size))
        extractor.train(was_training)
        self.vector_dim: int = probe.vector.shape[1]
        self.grid_dim: int = probe.grid.shape[2]
        self.num_regions: int = probe.grid.shape[1]
        self.grid_side: int = round(self.num_regions**0.5)

    def _grid(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """A node's output -> (grid (B, L, D), its default vector (B, D))."""
        if out.dim() == 3:  # ViT tokens (B, 1 + N, D): class token first
            vector, tokens = out[:, 0], out[:, 1:]  # (B, D), (B, N, D)
            if self.pool_side is None:
                return tokens.contiguous(), vector
            side = round(tokens.shape[1] ** 0.5)
            if side * side != tokens.shape[1]:
                raise CaptioningError(f"{tokens.shape[1]} patch tokens are not a square grid")
            out = tokens.transpose(1, 2).reshape(out.shape[0], -1, side, side)  # (B, D, s, s)
        if out.dim() != 4:
            raise CaptioningError(
                f"grid node of {self.arch} gives shape {tuple(out.shape)}, neither a map "
                "(B, C, h, w) nor tokens (B, T, D); choose another encoder.grid_node"
            )
        vector = out.mean(dim=(2, 3))  # (B, C): global average pooling
        if self.pool_side is not None:
            out = nn.functional.adaptive_avg_pool2d(out, self.pool_side)  # (B, C, S, S)
        return out.flatten(2).transpose(1, 2).contiguous(), vector  # (B, L, C)

    def forward(self, images: Tensor) -> EncoderOutput:
        """Encode a batch of normalised images.

        Args:
            images: ``(B, 3, H, W)`` float tensor, preprocessed as :attr:`preprocess` says.

        Returns:
            ``vector (B, D_v)`` and ``grid (B, L, D_g)``.
        """
        check_images(images)
        nodes = self.model(images)
        grid, vector = self._grid(nodes["grid"])
        if "vector" in nodes:
            out = nodes["vector"]
            vector = (
                out.mean(dim=(2, 3)) if out.dim() == 4 else out[:, 0] if out.dim() == 3 else out
            )
        return EncoderOutput(vector=vector.flatten(1), grid=grid)


def _unknown_arch(arch: str, names: list[str]) -> CaptioningError:
    close = difflib.get_close_matches(arch, names, n=5, cutoff=0.5)
    hint = f"close names: {', '.join(close)}" if close else f"{len(names)} models, e.g. resnet50"
    return CaptioningError(
        f"encoder.arch={arch!r} is not a torchvision classification model ({hint}); "
        "torchvision.models.list_models() lists them"
    )


def _extractor(model: nn.Module, arch: str, nodes: dict[str, str]) -> nn.Module:
    """``create_feature_extractor`` with one line for a node name the model does not have."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # train/eval graphs differ (dropout): expected
            return create_feature_extractor(model, return_nodes=nodes)
    except ValueError as exc:
        if "not present" not in str(exc) and "not a node" not in str(exc):
            raise
        _, graph = get_graph_node_names(model)
        names = [n for n, _ in model.named_modules() if n] + graph
        bad = next((n for n in nodes if not any(m.startswith(n) for m in graph)), next(iter(nodes)))
        close = difflib.get_close_matches(bad, names, n=5, cutoff=0.4)
        raise CaptioningError(
            f"{arch} has no node {bad!r} (close: {', '.join(close) or 'none'}); "
            "torchvision.models.feature_extraction.get_graph_node_names lists them"
        ) from None


def backbone(
    *,
    arch: str,
    weights: Weights = None,
    grid_node: str | None = None,
    vector_node: str | None = None,
    grid_size: int | None = None,
    image_size: int | None = None,
    crop: bool = True,
    trainable: bool = False,
    fine_tune_from: int | None = None,
) -> BackboneEncoder:
    """Any torchvision classification model as an encoder (see the module's docstring).

    Args:
        arch: its registered name (``torchvision.models.list_models()``): ``convnext_tiny``,
            ``efficientnet_b3``, ``regnet_y_16gf``, ``resnext101_32x8d``, ``vit_b_16``, ...
        weights: ``None``, a torchvision weights name for `arch` (``"DEFAULT"``, ...; its
            ``transforms()`` give the preprocessing) or a local state-dict file saved from
            ``torchvision.models.get_model(arch)`` (keys the encoder does not use may be absent).
        grid_node: graph node whose output is the grid (None: the family's default, FAMILIES).
        vector_node: graph node whose output is the vector (None: the grid node's global
            average; ViT: the class token).
        grid_size: side S the grid is adaptively pooled to (None: the node's own map, e.g.
            7 x 7 for most families at 224 px, 14 x 14 patches for ViT-B/16).
        image_size: input side (None: the weights' crop size, else 224). A ViT is built for
            it (its position embeddings), so with pretrained weights it must be theirs.
        crop: center crop (``True``) or the whole image resized square (``False``).
        trainable: whether the encoder learns.
        fine_tune_from: first stage that learns (the family's stage modules, 1-based:
            ``layer1..4``, ``features.0..``, ``encoder.layers.encoder_layer_0..``).

    Returns:
        The :class:`BackboneEncoder`.
    """
    names = classification_models()
    if arch not in names:
        raise _unknown_arch(arch, names)
    default_grid, stage_spec = _family(arch)
    enum_side = None
    if isinstance(weights, WeightsEnum) or (weights is not None and not is_weights_file(weights)):
        enum_side = int(resolve_weights(arch, weights).transforms().crop_size[0])
    side = image_size or enum_side or 224
    kwargs = {}
    if arch.startswith("vit_"):
        if enum_side is not None and side != enum_side:
            raise CaptioningError(
                f"{arch} with pretrained weights takes {enum_side} px images (its position "
                f"embeddings); set encoder.image_size={enum_side} or null"
            )
        kwargs = {"image_size": side} if enum_side is None else {}
    model, enum = build_torchvision(arch, weights, trainable=trainable, **kwargs)
    nodes = {grid_node or default_grid: "grid"}
    if vector_node:
        nodes[vector_node] = "vector"
    extractor = _extractor(model, arch, nodes)
    if weights is not None and enum is None:
        used = set(extractor.state_dict())
        load_state_dict_file(model, Path(weights), arch, optional=lambda key: key not in used)
    if enum is not None:
        preprocess = preprocess_from_weights(enum, side, crop=crop)
    else:
        preprocess = imagenet_preprocess(side, crop=crop)
    encoder = BackboneEncoder(
        extractor,
        arch=arch,
        stage_names=_stage_names(extractor, stage_spec),
        grid_size=grid_size,
        preprocess=preprocess,
        image_size=side,
    )
    encoder.set_trainable(trainable, fine_tune_from)
    return encoder
