"""Attention maps (captioning.visualize.attention)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.data.transforms import Preprocess, eval_transform
from captioning.decoding import Generation
from captioning.errors import CaptioningError
from captioning.visualize import (
    COLORMAP,
    attention_figure,
    attention_grids,
    attention_steps,
    model_view,
    region_maps,
    save_attention_map,
    upsample_attention,
)
from captioning.vocab import Vocabulary


def _picture(size: tuple[int, int] = (48, 40), seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# --------------------------------------------------------------------------- attention maps


def test_attention_grids_are_row_major() -> None:
    alphas = torch.zeros(2, 6)
    alphas[0, 4] = 1.0  # row 1, column 1 of a 2 x 3 grid
    alphas[1, 2] = 1.0  # row 0, column 2
    grids = attention_grids(alphas, (2, 3))
    assert grids.shape == (2, 2, 3) and grids[0, 1, 1] == 1.0 and grids[1, 0, 2] == 1.0
    assert attention_grids(np.ones((3, 16)) / 16).shape == (3, 4, 4)  # square grid inferred


@pytest.mark.parametrize(
    ("alphas", "grid_shape", "pattern"),
    [
        (torch.ones(2, 6), None, "square grid; pass grid_shape"),
        (torch.ones(2, 6), (2, 2), "grid_shape"),
        (torch.ones(1, 2, 4), None, r"\(T, L\)"),
    ],
)
def test_attention_grids_errors(alphas, grid_shape, pattern) -> None:
    with pytest.raises(CaptioningError, match=pattern):
        attention_grids(alphas, grid_shape)


def test_upsampled_attention_lies_over_its_grid_cell() -> None:
    alphas = torch.zeros(2, 64)
    alphas[0, 2 * 8 + 5] = 1.0  # grid cell (2, 5) of 8 x 8 -> pixels 16..23 x 40..47 of 64 x 64
    alphas[1] = 1.0 / 64  # uniform attention stays uniform
    maps = upsample_attention(alphas, (64, 64))
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32 and maps.min() >= 0
    row, col = np.unravel_index(maps[0].argmax(), maps[0].shape)
    assert 16 <= row <= 23 and 40 <= col <= 47
    ys, xs = np.mgrid[0:64, 0:64]
    centroid = ((maps[0] * ys).sum() / maps[0].sum(), (maps[0] * xs).sum() / maps[0].sum())
    assert centroid == pytest.approx((19.5, 43.5), abs=0.5)
    np.testing.assert_allclose(maps[1], 1.0 / 64, rtol=1e-5)
    assert upsample_attention(attention_grids(alphas), (32, 48)).shape == (2, 32, 48)


def test_attention_figure_shows_each_words_weights_over_the_gray_image() -> None:
    """One panel per word after the image; each shows the image in gray (the objects' colours
    cannot blend with the map's) and that word's weights upsampled to it, every panel on one
    scale from 0 to the caption's largest weight, read off the colour bar."""
    image = _picture((48, 40))
    words = ["a", "red", "circle", "<end>"]
    alphas = torch.rand(4, 16, generator=torch.Generator().manual_seed(0)).softmax(dim=1)
    alphas[1] = 0.0
    alphas[1, 5] = 1.0  # "red": all on region (1, 1) of the 4 x 4 grid
    fig = attention_figure(image, words, alphas, columns=5, panel_size=64)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["image", *words]
    bar = fig.axes[-1]
    assert bar.get_ylabel() == "attention weight"
    view = np.asarray(panels[0].images[0].get_array())  # the image, in colour
    assert view.shape[2] == 3 and np.ptp(view.astype(int), axis=2).max() > 0
    maps = upsample_attention(alphas, view.shape[:2])  # (T, H, W)
    heat_maps = [ax.images[1] for ax in panels[1:]]
    for k, ax in enumerate(panels[1:]):
        gray, heat = ax.images
        backdrop = np.asarray(gray.get_array()).astype(int)
        assert np.ptp(backdrop, axis=2).max() == 0  # R = G = B
        np.testing.assert_allclose(np.asarray(heat.get_array()), maps[k], rtol=1e-6)
        assert heat.norm.vmin == 0.0 and heat.norm.vmax == pytest.approx(float(maps.max()))
        assert heat.get_cmap() is heat_maps[0].get_cmap() and COLORMAP in heat.get_cmap().name
    row, col = np.unravel_index(np.asarray(panels[2].images[1].get_array()).argmax(), maps[1].shape)
    assert (row // (maps.shape[1] // 4), col // (maps.shape[2] // 4)) == (1, 1)


def test_save_attention_map_lays_panels_out_in_rows(tmp_path: Path) -> None:
    image = _picture((48, 40))
    image.save(tmp_path / "in.png")
    words = ["a", "red", "circle", "<end>"]
    alphas = torch.rand(4, 16).softmax(dim=1)
    out = save_attention_map(image, words, alphas, tmp_path / "maps" / "att.png", columns=5)
    with Image.open(out) as png:
        wide = png.size
    assert out == tmp_path / "maps" / "att.png" and wide[0] > 2 * wide[1]  # 5 panels in one row
    out = save_attention_map(
        tmp_path / "in.png", words, alphas.numpy(), tmp_path / "b.png", columns=2
    )  # a path and an array; 5 panels on 3 rows of 2
    with Image.open(out) as png:
        tall = png.size
    assert tall[1] > tall[0]
    with pytest.raises(CaptioningError, match="3 words but 4 attention steps"):
        save_attention_map(image, words[:3], alphas, tmp_path / "c.png")


def test_attention_steps_cut_at_end_and_take_the_best_beam() -> None:
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "red", "circle"])
    seqs = torch.tensor([[4, 5, 6, 2, 0], [4, 6, 0, 0, 0]])  # the second never emitted <end>
    attention = torch.rand(2, 5, 9)
    one = Generation(seqs.unsqueeze(1), torch.zeros(2, 1), attention.unsqueeze(1))  # (B, 1, ...)
    words, alphas = attention_steps(one, vocab, 0)
    assert words == ["a", "red", "circle", "<end>"] and torch.equal(alphas, attention[0, :4])
    words, alphas = attention_steps(one, vocab, 1)
    assert words == ["a", "circle"] and alphas.shape == (2, 9)
    beams = Generation(seqs.unsqueeze(0), torch.zeros(1, 2), attention.unsqueeze(0))  # (1, K, ...)
    words, alphas = attention_steps(beams, vocab, 0)
    assert words[-1] == "<end>" and torch.equal(alphas, attention[0, :4])
    with pytest.raises(CaptioningError, match="decoder=attention"):
        attention_steps(Generation(seqs.unsqueeze(1), torch.zeros(2, 1)), vocab)


def _painted(image, values: np.ndarray) -> np.ndarray:
    """The RGBA an AxesImage paints for `values`, its own ``alpha`` (scalar or array) applied."""
    rgba = image.get_cmap()(image.norm(values))  # (..., 4)
    alpha = image.get_alpha()
    if alpha is not None:
        rgba[..., 3] = alpha
    return rgba


def test_overlay_paints_weight_zero_in_the_colour_bars_low_end_colour() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import QuadMesh

    alphas = torch.zeros(2, 16)
    alphas[0, 5], alphas[1, 10] = 1.0, 1.0  # most of each map is exactly 0
    fig = attention_figure(_picture((48, 40)), ["a", "b"], alphas, panel_size=64)
    FigureCanvasAgg(fig).draw()
    heat, bar = fig.axes[1].images[1], fig.axes[-1]
    data = np.asarray(heat.get_array())
    painted = _painted(heat, data)  # (H, W, 4)
    low = painted[data == data.min()][0]
    high = painted[data == data.max()][0]
    (mesh,) = [c for c in bar.collections if isinstance(c, QuadMesh)]
    solids = mesh.get_facecolor()  # the bar's cells, bottom first
    np.testing.assert_allclose(low, solids[0], atol=0.01)  # one colour, opacity included
    np.testing.assert_allclose(high, solids[-1], atol=0.01)
    assert low[3] < high[3]  # more opaque where the model looks
    assert bar.get_facecolor()[:3] == pytest.approx((0.5, 0.5, 0.5))  # over gray, as the photo


def test_attention_figure_of_a_wide_photo_keeps_its_aspect_ratio() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    pre = Preprocess(resize_size=64, crop_size=64, mean=(0.5,) * 3, std=(0.25,) * 3, crop=False)
    view = model_view(_picture((200, 100)), pre)  # a 2:1 photo, squashed for the encoder
    fig = attention_figure(view, ["a", "b"], torch.rand(2, 16).softmax(1), panel_size=128)
    FigureCanvasAgg(fig).draw()
    for ax in fig.axes[:3]:  # the photo and the two word panels
        for image in ax.images:
            x0, x1, y0, y1 = image.get_extent()
            assert abs(x1 - x0) == pytest.approx(2 * abs(y0 - y1))  # 2:1 in data
        box = ax.get_window_extent()
        assert box.width == pytest.approx(2 * box.height, rel=0.03)  # and on the page


@pytest.mark.parametrize("crop", [True, False])
def test_model_view_is_what_the_encoder_sees_at_the_photos_own_shape(crop: bool) -> None:
    pre = Preprocess(
        resize_size=72, crop_size=64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25), crop=crop
    )
    image = Image.fromarray(
        np.kron(np.random.default_rng(0).integers(0, 255, (8, 10, 3)), np.ones((10, 10, 1))).astype(
            np.uint8
        )
    )  # 100 x 80 in blocks of 10 pixels, so resampling differs only at the block edges
    view = model_view(image, pre)
    assert view.mode == "RGB"
    # crop: the center square the encoder keeps (80 * 64/72 = 71 pixels of the photo);
    # no crop: the whole photo, not squashed into the encoder's square
    if crop:
        assert view.size[0] == view.size[1] and abs(view.size[0] - 80 * 64 / 72) <= 1
    else:
        assert view.size == (100, 80)
    expected = eval_transform(pre)(image) * torch.tensor(pre.std).view(3, 1, 1) + torch.tensor(
        pre.mean
    ).view(3, 1, 1)  # (3, 64, 64) in [0, 1]
    seen = view.resize((64, 64), Image.Resampling.BILINEAR)  # as the encoder resizes it
    got = torch.from_numpy(np.array(seen)).permute(2, 0, 1) / 255.0  # (3, 64, 64)
    assert (got - expected.clamp(0, 1)).abs().mean() < 0.03
    assert model_view(_picture((3000, 1500)), pre, max_side=500).size[0] <= 500


def test_region_maps_sum_the_weights_of_the_boxes_over_each_pixel() -> None:
    """Object regions (pre-extracted features): a pixel shows the summed weight of the boxes
    holding it; padding columns (weight 0, no box) are dropped; weight on them is an error."""
    boxes = np.array([[0, 0, 4, 2], [2, 0, 6, 4]], dtype=np.float32)  # x1, y1, x2, y2
    alphas = torch.tensor([[0.25, 0.75, 0.0], [1.0, 0.0, 0.0]])  # (T, L = 3): one padded
    maps = region_maps(alphas, boxes, (4, 6))  # (T, H, W)
    assert maps.shape == (2, 4, 6)
    assert maps[0, 0, 0] == 0.25 and maps[0, 0, 3] == 1.0 and maps[0, 3, 5] == 0.75
    assert maps[0, 3, 0] == 0.0 and maps[1, 1, 3] == 1.0 and maps[1, 3, 3] == 0.0
    with pytest.raises(CaptioningError, match="past the 1 boxes"):
        region_maps(alphas, boxes[:1], (4, 6))
    image = _picture((60, 40))
    fig = attention_figure(image, ["a", "b"], alphas, boxes=boxes * 10, panel_size=60)
    heat = np.asarray(fig.axes[1].images[1].get_array())  # (H, W) of the first word
    np.testing.assert_allclose(
        heat, region_maps(alphas, boxes, (4, 6))[0].repeat(10, 0).repeat(10, 1)
    )
