"""Tests for captioning.visualize (attention maps, HTML report, curves) and tools/plot_run.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import chromium_flags, run_tool, tiny_checkpoint, tiny_model_config
from PIL import Image

from captioning.data.transforms import Preprocess, eval_transform
from captioning.decoding import Generation
from captioning.errors import CaptioningError
from captioning.training.run_log import RunLog
from captioning.visualize import (
    COLORMAP,
    ReportItem,
    attention_figure,
    attention_grids,
    attention_steps,
    model_view,
    plot_training_curves,
    report_items,
    save_attention_map,
    upsample_attention,
    write_html_report,
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
    for k, ax in enumerate(panels[1:]):
        gray, heat = ax.images
        backdrop = np.asarray(gray.get_array()).astype(int)
        assert np.ptp(backdrop, axis=2).max() == 0  # R = G = B
        np.testing.assert_allclose(np.asarray(heat.get_array()), maps[k], rtol=1e-6)
        assert heat.norm.vmin == 0.0 and heat.norm.vmax == pytest.approx(float(maps.max()))
        assert heat.get_cmap().name == COLORMAP
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


@pytest.mark.parametrize("crop", [True, False])
def test_model_view_is_the_encoder_input(crop: bool) -> None:
    pre = Preprocess(
        resize_size=72, crop_size=64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25), crop=crop
    )
    image = _picture((100, 80))
    view = model_view(image, pre)
    assert view.size == (64, 64) and view.mode == "RGB"
    expected = eval_transform(pre)(image) * torch.tensor(pre.std).view(3, 1, 1) + torch.tensor(
        pre.mean
    ).view(3, 1, 1)  # (3, 64, 64) in [0, 1]
    got = torch.from_numpy(np.array(view)).permute(2, 0, 1) / 255.0  # (3, 64, 64)
    assert (got - expected.clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6


# --------------------------------------------------------------------------- HTML report


def _items(n: int, *, images: bool = True) -> list[ReportItem]:
    rng = np.random.default_rng(1)
    return [
        ReportItem(
            image_id=100 + k,
            caption=f"caption {k} <b>&</b>",
            references=[f"ref {k} one", "ref <two>"],
            scores={"CIDEr": float(rng.random() * 3), "Bleu_4": float(rng.random())},
            image=_picture(seed=k) if images and k % 4 else None,
        )
        for k in range(n)
    ]


def _rows(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-image-id="(\d+)"', page)]


def test_html_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    items = _items(12)
    out = write_html_report(
        tmp_path / "r" / "report.html",
        items,
        title="Run <1>",
        scores={"CIDEr": 1.5, "Bleu_4": 0.25, "num_images": 12},
        notes=["METEOR skipped: java not found"],
    )
    page = out.read_text(encoding="utf-8")
    assert _rows(page) == [item.image_id for item in items]  # file order; the script sorts
    assert page.count('<img src="data:image/jpeg;base64,') == sum(1 for i in items if i.image)
    assert "<b>" not in page and "&lt;b&gt;&amp;&lt;/b&gt;" in page and "Run &lt;1&gt;" in page
    assert not re.search(r"(src|href)=\"(https?:|//)", page) and "<link" not in page
    assert "METEOR skipped" in page and "1.5000" in page and ">12<" in page
    assert 'data-default-sort="CIDEr"' in page


def test_html_report_without_images_has_no_thumbnail_column(tmp_path: Path) -> None:
    refs = {1: ["a cat"], 2: ["a dog"]}
    items = report_items(refs, {2: "dog", 1: "cat"}, {1: {"CIDEr": 0.5}, 2: {"CIDEr": 0.1}})
    assert [i.image_id for i in items] == [2, 1] and items[1].references == ["a cat"]
    page = write_html_report(tmp_path / "r.html", items, scores={}).read_text()
    assert "<img" not in page and "<th>image</th>" not in page and len(_rows(page)) == 2


def _dump_dom(chromium: str, page: Path, tmp_path: Path, fragment: str = "") -> str:
    cmd = [
        chromium,
        *chromium_flags(tmp_path / "chromium-profile"),
        "--dump-dom",
        page.resolve().as_uri() + fragment,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_html_report_renders_and_sorts_in_chromium(tmp_path: Path, chromium: str) -> None:
    items = _items(30)
    items[3].scores = {"Bleu_4": 0.5}  # no CIDEr: shown as n/a, sorted last
    page = write_html_report(tmp_path / "report.html", items, scores={"CIDEr": 1.0})
    dom = _dump_dom(chromium, page, tmp_path)
    assert 'data-sorted="CIDEr ascending"' in dom  # the script ran
    by_cider = sorted((i for i in items if "CIDEr" in i.scores), key=lambda i: i.scores["CIDEr"])
    assert _rows(dom) == [i.image_id for i in by_cider] + [items[3].image_id]  # worst first
    assert dom.count("<img") == sum(1 for i in items if i.image)
    dom = _dump_dom(chromium, page, tmp_path, "#sort=-Bleu_4")
    assert 'data-sorted="Bleu_4 descending"' in dom
    by_bleu = sorted(items, key=lambda i: -i.scores["Bleu_4"])
    assert _rows(dom) == [i.image_id for i in by_bleu]


# --------------------------------------------------------------------------- curves


def _run_dir(tmp_path: Path, epochs: int = 4) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = RunLog(tmp_path, tensorboard=False)
    for e in range(1, epochs + 1):
        log.log_epoch(
            {
                "epoch": e,
                "step": 10 * e,
                "train_loss": 3.0 / e,
                "val_Bleu_1": 0.1 * e,
                "val_Bleu_4": 0.05 * e,
                "val_CIDEr": 0.3 * e,
                "val_num_images": 20,
            }
        )
    log.close()
    return tmp_path


def test_training_curves_plot_every_metric_per_epoch(tmp_path: Path) -> None:
    from captioning.training.run_log import read_metrics_csv
    from captioning.visualize import training_curves_figure

    rows = read_metrics_csv(_run_dir(tmp_path) / "metrics.csv")
    fig = training_curves_figure(rows, title="run")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["train loss", "validation", "validation CIDEr"]
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    assert set(lines) == {"train_loss", "Bleu_1", "Bleu_4", "CIDEr"}
    for label, key in (
        ("train_loss", "train_loss"),
        ("Bleu_4", "val_Bleu_4"),
        ("CIDEr", "val_CIDEr"),
    ):
        xs, ys = lines[label].get_data()
        assert list(xs) == [1, 2, 3, 4] and list(ys) == pytest.approx([r[key] for r in rows])
    out = plot_training_curves(rows, tmp_path / "c.png", title="run")
    with Image.open(out) as png:
        assert png.size[0] > 2 * png.size[1]  # three panels side by side
    loss_only = training_curves_figure([{"epoch": 1, "train_loss": 2.0}])
    assert [ax.get_title() for ax in loss_only.axes] == ["train loss"]
    with pytest.raises(CaptioningError, match="no epochs"):
        plot_training_curves([], tmp_path / "none.png")


def test_plot_run_tool(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "run")
    done = run_tool("plot_run.py", run)
    assert done.returncode == 0, done.stderr
    assert (run / "curves.png").is_file() and "4 epochs plotted" in done.stdout
    assert run_tool("plot_run.py", run / "metrics.csv", "--out", tmp_path / "x.svg").returncode == 0
    assert (tmp_path / "x.svg").read_text().lstrip().startswith("<?xml")
    missing = run_tool("plot_run.py", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.csv").write_text("epoch\n")
    empty = run_tool("plot_run.py", tmp_path / "empty")
    assert missing.returncode == 2 and empty.returncode == 2
    err = missing.stderr + empty.stderr
    assert "nowhere" in err and "no epochs" in err and "Traceback" not in err


# --------------------------------------------------------------------------- caption.py


def _checkpoint(path: Path, decoder: str, **settings) -> Path:
    """An untrained model saved as training would, that emits no special token (`<pad>`,
    `<start>`, `<end>`, `<unk>`): every caption has max_len = 5 words (enough to exercise the
    tools)."""
    from captioning.checkpoint import load_checkpoint, save_checkpoint

    config = tiny_model_config(decoder=decoder, vector_dim=16, image_size=32, max_len=5, **settings)
    ckpt = load_checkpoint(tiny_checkpoint(path, config, words=["a red circle"]))
    ckpt["model"]["decoder.out.bias"][:4] = -1e4  # the specials
    fields = ("model", "config", "vocab", "epoch", "step")
    return save_checkpoint(path, **{k: ckpt[k] for k in fields})


def test_caption_tool_draws_attention_maps(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "att.pt", "attention", attention_dim=8)
    images = []
    for k in range(2):
        images.append(tmp_path / f"img{k}.png")
        _picture((60, 40), seed=k).save(images[-1])
    out = tmp_path / "maps" / "att.png"
    done = run_tool("caption.py", "-c", ckpt, images[0], "--attention-map", out)
    assert done.returncode == 0, done.stderr
    with Image.open(out) as png:
        assert png.size[0] > png.size[1]  # the image and 5 word panels: one row of six
    assert done.stdout.startswith(f"{images[0]}\t") and f"attention map: {out}" in done.stderr
    assert len(done.stdout.split("\t")[1].split()) == 5
    done = run_tool("caption.py", "-c", ckpt, *images, "--attention-map", out, "--beam-size", "2")
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.parent.iterdir()} == {"att.png", "att_img0.png", "att_img1.png"}

    ckpt = _checkpoint(tmp_path / "lstm.pt", "rnn", cell="lstm")
    done = run_tool("caption.py", "-c", ckpt, images[0], "--attention-map", out)
    assert done.returncode == 2
    assert (
        done.stderr.startswith("error: --attention-map needs an attention model")
        and done.stderr.count("\n") == 1
    )
