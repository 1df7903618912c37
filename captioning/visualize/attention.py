"""Attention maps: the Show-Attend-and-Tell figure of where a model looked for each word.

:func:`save_attention_map` draws the image, then one panel per generated word with that step's
attention weights upsampled smoothly to the image and laid over it. Figures are drawn with
matplotlib's object-oriented API on its Agg canvas: no display is needed and pyplot's global
backend (e.g. a notebook's inline one) is left alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from captioning.data.images import load_image, to_rgb
from captioning.data.transforms import Preprocess
from captioning.decoding import Generation
from captioning.errors import CaptioningError
from captioning.vocab import Vocabulary

__all__ = ["COLORMAP", "OPACITY", "ImageSource", "attention_colormap", "attention_figure"]
__all__ += ["attention_grids", "attention_steps", "model_view", "region_maps", "save_attention_map"]
__all__ += ["upsample_attention"]

ImageSource = str | os.PathLike | Image.Image
#: the longest side of :func:`model_view` (figures draw panels of a few hundred pixels)
VIEW_MAX_SIDE = 1024


def _as_rgb(image: ImageSource) -> Image.Image:
    return to_rgb(image) if isinstance(image, Image.Image) else load_image(image)


def attention_grids(
    alphas: Tensor | np.ndarray, grid_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Reshapes attention weights over the flattened encoder grid back into the grid.

    Args:
        alphas: (T, L) weights of T decoding steps over L = h * w regions, row-major (the
            encoder flattens its (h, w) map that way).
        grid_shape: (h, w); None infers a square grid (L must be a perfect square).

    Returns:
        float32 maps (T, h, w).

    Raises:
        CaptioningError: weights that are not 2-D, or a grid that does not hold L cells.
    """
    a = (
        alphas.detach().float().cpu().numpy()
        if isinstance(alphas, Tensor)
        else np.asarray(alphas, dtype=np.float32)
    )
    if a.ndim != 2:
        raise CaptioningError(
            f"attention weights must be (T, L) for one image, got shape "
            f"{tuple(a.shape)}; select one image (and one beam) first"
        )
    steps, regions = a.shape
    if grid_shape is None:
        side = math.isqrt(regions)
        if side * side != regions:
            raise CaptioningError(
                f"{regions} attention regions do not form a square grid; pass grid_shape=(h, w)"
            )
        grid_shape = (side, side)
    h, w = grid_shape
    if h * w != regions:
        raise CaptioningError(
            f"grid_shape {grid_shape} has {h * w} cells but the attention "
            f"has {regions} regions; pass the encoder's grid size"
        )
    return a.reshape(steps, h, w)  # (T, h, w)


def upsample_attention(
    alphas: Tensor | np.ndarray, size: tuple[int, int], *, grid_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Attention weights (T, L) or maps (T, h, w) -> smooth maps (T, H, W) over the image.

    Bicubic interpolation (pixel centres aligned, ``align_corners=False``), clipped at 0, so
    each map keeps its mass where the grid cell lies on the image.

    Args:
        alphas: (T, L) weights over a row-major h x w grid, or maps (T, h, w).
        size: (H, W) of the image.
        grid_shape: (h, w) for (T, L) weights; None infers a square grid.

    Returns:
        float32 maps (T, H, W).
    """
    grids = alphas if np.ndim(alphas) == 3 else attention_grids(alphas, grid_shape)
    maps = torch.as_tensor(np.asarray(grids, dtype=np.float32)).unsqueeze(1)  # (T, 1, h, w)
    maps = F.interpolate(maps, size=tuple(size), mode="bicubic", align_corners=False)
    return maps.clamp_(min=0).squeeze(1).numpy()  # (T, H, W)


def region_maps(
    alphas: Tensor | np.ndarray, boxes: Tensor | np.ndarray, size: tuple[int, int]
) -> np.ndarray:
    """Attention over object regions as maps: each pixel gets the summed weight of the boxes
    that hold it (the Up-Down paper's figures).

    Args:
        alphas: (T, L) weights over L >= K regions; columns K.. are padding (weight 0, dropped).
        boxes: (K, 4) the real regions' boxes ``x1, y1, x2, y2`` in pixels of an image of `size`.
        size: (H, W) of the image.

    Returns:
        float32 maps (T, H, W).

    Raises:
        CaptioningError: shapes that do not fit, or weight on a column with no box.
    """
    a = torch.as_tensor(np.asarray(alphas, dtype=np.float32))  # (T, L)
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32))  # (K, 4)
    if a.dim() != 2 or b.dim() != 2 or b.size(1) != 4 or b.size(0) > a.size(1):
        raise CaptioningError(
            f"region maps need weights (T, L) and boxes (K <= L, 4), got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    if bool((a[:, b.size(0) :] != 0).any()):
        raise CaptioningError(
            f"attention on regions past the {b.size(0)} boxes given; pass every real region's box"
        )
    h, w = size
    ys, xs = torch.arange(h).float() + 0.5, torch.arange(w).float() + 0.5  # pixel centres
    inside_y = (ys >= b[:, 1:2]) & (ys < b[:, 3:4])  # (K, H)
    inside_x = (xs >= b[:, 0:1]) & (xs < b[:, 2:3])  # (K, W)
    inside = (inside_y.unsqueeze(2) & inside_x.unsqueeze(1)).float()  # (K, H, W)
    return torch.einsum("tk,khw->thw", a[:, : b.size(0)], inside).numpy()  # (T, H, W)


#: the attention colour map: perceptually uniform, drawn over a gray version of the image so
#: that neither the objects' own colours nor the map's blend into each other
COLORMAP = "viridis"
#: opacity of the overlay at weight 0 and at the caption's largest weight: where the model
#: looks, the map shows most; elsewhere the photo shows through
OPACITY = (0.2, 0.85)
#: the gray the colour bar is drawn on: the overlay's colours as they look over a mid-gray photo
BAR_BACKDROP = "0.5"


def attention_colormap() -> Any:
    """:data:`COLORMAP` with the overlay's opacity in it (from ``OPACITY[0]`` at its low end
    to ``OPACITY[1]`` at its high end): the one colour mapping both the word panels and the
    colour bar draw with, so the bar's low end is the colour a weight of 0 is painted."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    colors = colormaps[COLORMAP](np.linspace(0.0, 1.0, 256))  # (256, 4) RGBA
    colors[:, 3] = np.linspace(*OPACITY, 256)
    return ListedColormap(colors, name=f"{COLORMAP}_overlay")


def attention_figure(
    image: ImageSource,
    words: Sequence[str],
    alphas: Tensor | np.ndarray,
    *,
    grid_shape: tuple[int, int] | None = None,
    columns: int = 5,
    panel_size: int = 224,
    boxes: Tensor | np.ndarray | None = None,
) -> Any:
    """The figure :func:`save_attention_map` saves: the image, then one panel per word.

    Each word's panel shows the image in gray with that step's weights, upsampled bicubically
    onto the image at its own aspect ratio, in :func:`attention_colormap` (:data:`COLORMAP`,
    more opaque where the weight is higher), all panels on one scale from 0 to the largest
    weight of the caption, given by the colour bar on the right, drawn with the same colour
    map and scale (so panels compare: a diffuse step looks faint).

    Args:
        image: the image the encoder saw, at its own aspect ratio (see :func:`model_view`),
            or a path.
        words: the generated words, one per decoding step (``<end>`` included when emitted).
        alphas: (T, L) attention weights, T = ``len(words)``, L = h * w regions (row-major).
        grid_shape: (h, w) of the encoder grid; None infers a square one.
        columns: panels per row.
        panel_size: longer side of each panel in pixels.
        boxes: (K, 4) boxes ``x1, y1, x2, y2`` (pixels of `image`) of the real regions, for
            weights over object regions (pre-extracted features): each pixel shows the summed
            weight of the boxes that hold it (:func:`region_maps`); padding columns dropped.

    Returns:
        A ``matplotlib.figure.Figure``: axes 0 the image, axes 1..T the words (each with the
        gray image and the weights as its two images), the last axes the colour bar.

    Raises:
        CaptioningError: weights that are not (T, L), a grid that does not fit L, or a word
            count different from T.
    """
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    grids = attention_grids(alphas, grid_shape) if boxes is None else np.asarray(alphas)
    if len(words) != grids.shape[0]:
        raise CaptioningError(
            f"{len(words)} words but {grids.shape[0]} attention steps; pass "
            "one word per decoding step (with <end> when it was generated)"
        )
    picture = _as_rgb(image)
    scale = panel_size / max(picture.size)
    picture = picture.resize(
        (max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
        Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS,
    )
    gray = np.asarray(picture.convert("L").convert("RGB"))  # (H, W, 3), R = G = B
    if boxes is None:
        maps = upsample_attention(grids, (picture.height, picture.width))  # (T, H, W)
    else:
        scaled = np.asarray(boxes, dtype=np.float32) * scale  # (K, 4) on the resized picture
        maps = region_maps(grids, scaled, (picture.height, picture.width))  # (T, H, W)
    norm = Normalize(vmin=0.0, vmax=max(float(maps.max()), 1e-12))  # one scale for all words
    cmap = attention_colormap()
    panels = 1 + len(words)
    cols = max(1, min(columns, panels))
    rows = math.ceil(panels / cols)
    aspect = picture.height / picture.width
    fig = Figure(figsize=(2.2 * cols + 0.9, 2.2 * aspect * rows + 0.45 * rows), dpi=100)
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[1] * cols + [0.08])
    heat = None
    for k in range(rows * cols):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        ax.set_axis_off()
        if k >= panels:
            continue
        if k == 0:
            ax.imshow(picture)
            ax.set_title("image", fontsize=10, color="0.4")
            continue
        ax.imshow(gray)
        heat = ax.imshow(maps[k - 1], cmap=cmap, norm=norm, interpolation="bilinear")
        ax.set_title(words[k - 1], fontsize=12)
    if heat is not None:
        bar = fig.colorbar(heat, cax=fig.add_subplot(grid[:, cols]))
        bar.ax.set_facecolor(BAR_BACKDROP)
        bar.set_label("attention weight", fontsize=9)
        bar.ax.tick_params(labelsize=8)
    fig.tight_layout(pad=0.4)
    return fig


def save_attention_map(
    image: ImageSource,
    words: Sequence[str],
    alphas: Tensor | np.ndarray,
    path: str | os.PathLike,
    *,
    grid_shape: tuple[int, int] | None = None,
    columns: int = 5,
    panel_size: int = 224,
    boxes: Tensor | np.ndarray | None = None,
) -> Path:
    """Draws the image and one panel per word with its attention overlaid; saves it (PNG, ...).

    See :func:`attention_figure` (arguments alike; `path`'s suffix picks the format).

    Returns:
        The path written.
    """
    fig = attention_figure(
        image,
        words,
        alphas,
        grid_shape=grid_shape,
        columns=columns,
        panel_size=panel_size,
        boxes=boxes,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def attention_steps(
    generation: Generation, vocab: Vocabulary, index: int = 0
) -> tuple[list[str], Tensor]:
    """The words and attention weights of one image of a :class:`Generation` (best beam).

    Args:
        generation: from ``Captioner.generate`` or :func:`captioning.decoding.generate`.
        vocab: the model's vocabulary.
        index: which image of the batch.

    Returns:
        (words, alphas (T, L)): words up to and including ``<end>`` (when emitted).

    Raises:
        CaptioningError: the decoder gave no attention weights.
    """
    if generation.attention is None:
        raise CaptioningError(
            "this model has no attention weights to draw; use a checkpoint "
            "trained with decoder=attention"
        )
    ids, alphas = generation.best[index], generation.best_attention[index]  # (T,), (T, L)
    tokens = ids.tolist()
    if vocab.eos_id in tokens:
        n = tokens.index(vocab.eos_id) + 1
    else:
        n = next((k for k, t in enumerate(tokens) if t == vocab.pad_id), len(tokens))
    return [vocab.id_to_token(t) for t in tokens[:n]], alphas[:n].cpu()


def model_view(
    image: ImageSource, preprocess: Preprocess, *, max_side: int = VIEW_MAX_SIDE
) -> Image.Image:
    """The part of an image the encoder sees, at the photo's own aspect ratio and resolution.

    With ``preprocess.crop`` the encoder sees the center square that survives its resize and
    crop: that square of the photo. Without, it sees the whole photo squashed into a square:
    the whole photo, not squashed (the attention grid is then stretched over it, as the
    encoder's grid cells were). Either way the view is not scaled up to the network's input
    size (no blur); a view longer than `max_side` is scaled down.

    Args:
        image: a PIL image or a path.
        preprocess: the encoder's preprocessing (``model.encoder.preprocess``).
        max_side: the longest side kept, in pixels.

    Returns:
        An RGB image covering exactly what the attention grid covers.
    """
    picture = _as_rgb(image)
    if preprocess.crop:
        # the crop box of torchvision's Resize(shorter side) + CenterCrop, in the photo's pixels
        width, height = picture.size
        short, long = sorted((width, height))
        resized_long = int(preprocess.resize_size * long / short)  # as torchvision rounds
        resized = (
            (resized_long, preprocess.resize_size)
            if width >= height
            else (preprocess.resize_size, resized_long)
        )
        crop = preprocess.crop_size
        left = round((resized[0] - crop) / 2.0) * width / resized[0]
        top = round((resized[1] - crop) / 2.0) * height / resized[1]
        right = left + crop * width / resized[0]
        bottom = top + crop * height / resized[1]
        picture = picture.crop((round(left), round(top), round(right), round(bottom)))
    if max(picture.size) > max_side:
        shrink = max_side / max(picture.size)
        size = (max(1, round(picture.width * shrink)), max(1, round(picture.height * shrink)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    return picture
