"""Image loading benchmark: images/s per data-loader worker, full JPEG decoding vs reduced-size.

Writes COCO-sized JPEGs (640x480 and 640x427, COCO's two commonest sizes; photo-like content:
smooth colour gradients, sensor-like noise and filled shapes; quality 90; light noise, ~60 KB
files, and heavier noise giving COCO's average file size, ~150 KB) to a temporary folder,
then times what one loader worker does per image, ``transform(load_image(path, ...))``, for the
evaluation transform and the augmented training transform (random crop + colour jitter) of three
encoder inputs, both ways side by side in one process (interleaved rounds, best of each):

* full: ``load_image(path)``, every pixel decoded (the code before reduced-size decoding);
* reduced: ``load_image(path, min_side=transform.decode_min_side)``, what the datasets do now:
  a JPEG whose sides are both at least twice what the transform needs is decoded at 1/2, 1/4 or
  1/8 scale by libjpeg's DCT scaling (Pillow's ``draft``).

Rates are per CPU second of the one worker thread (torch at 1 thread, as in a loader worker), so
other processes on a shared machine do not count. The difference column is the mean absolute
difference between the two paths' transformed tensors, un-normalised to pixel units (/255), with
the same random crop and jitter on both sides (same seed). A second table times what training does with ``data.image_cache`` after its first epoch: a
training item from memory (:class:`~captioning.data.image_cache.ImageCache`: the resized ``uint8``
pixels, normalised) against reading and decoding it again, for the shapes data's 128-px PNGs at
``vgg_tiny``'s 64 px and for the COCO-sized JPEGs, with the check that both give the same tensor
bit for bit. ``python -m benchmarks images [--quick]``; ``run(quick)`` returns ``rows``,
``memory_rows`` and ``markdown``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from captioning.data.image_cache import ImageCache
from captioning.data.images import load_image, reduced_decode
from captioning.data.shapes import render_scene, sample_scene
from captioning.data.transforms import (
    ImageTransform,
    Preprocess,
    eval_transform,
    imagenet_preprocess,
    train_transform,
)

__all__ = ["photo", "run"]

#: (width, height, noise std): light content, then COCO's average file size (~160 KB at 640x480)
SOURCES = ((640, 480, 6.0), (640, 480, 16.0), (640, 427, 16.0))
INPUTS = {  # label -> the encoder's preprocessing
    "VGG-16 recipe: 224 crop of 256": imagenet_preprocess(224),
    "224 whole image (crop=false)": imagenet_preprocess(224, crop=False),
    "vgg_tiny: 64 whole image": imagenet_preprocess(64, crop=False),
}
TARGET_SPEEDUP, TARGET_MAD = 1.8, 2.0


def photo(width: int, height: int, seed: int, noise: float = 6.0) -> Image.Image:
    """A photo-like RGB image: smooth gradients, Gaussian noise of std ``noise``, a dozen
    filled shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phases = rng.uniform(0, 6, 3)
    base = np.stack(
        [128 + 100 * np.sin(x / (40 + 20 * c) + y / (60 + 10 * c) + phases[c]) for c in range(3)],
        axis=-1,
    )  # (H, W, 3)
    base += rng.normal(0, noise, base.shape)
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width - 50)), int(rng.integers(0, height - 50))
        box = [x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 200))]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


def _pass(paths: list[Path], transform: ImageTransform, min_side: int | None) -> float:
    """CPU seconds to load and transform every image once."""
    start = time.process_time()
    for path in paths:
        transform(load_image(path, min_side=min_side))
    return time.process_time() - start


def _difference(paths: list[Path], transform: ImageTransform, pre: Preprocess) -> float:
    """Mean absolute difference, in /255 pixel units, between full and reduced decoding."""
    std = torch.tensor(pre.std)[:, None, None]  # undo the normalisation's scaling
    total = 0.0
    for k, path in enumerate(paths):
        torch.manual_seed(k)
        full = transform(load_image(path))  # (3, S, S)
        torch.manual_seed(k)
        reduced = transform(load_image(path, min_side=transform.decode_min_side))
        total += float(((full - reduced) * std).abs().mean()) * 255
    return total / len(paths)


def _scale(path: Path, min_side: int) -> str:
    """The decoding scale the loader picks for this file, as text."""
    image = load_image(path, min_side=min_side)
    reduced = reduced_decode(image)
    return "1/1" if reduced is None else f"1/{round(reduced.source_size[0] / image.width)}"


def _row(label: str, kind: str, paths: list[Path], rounds: int) -> dict:
    pre = INPUTS[label]
    make: Callable[[], ImageTransform] = (
        (lambda: eval_transform(pre))
        if kind == "eval"
        else (lambda: train_transform(pre, augment=True))
    )
    transform = make()
    best = {"full": float("inf"), "reduced": float("inf")}
    torch.manual_seed(0)
    for _ in range(rounds):
        best["full"] = min(best["full"], _pass(paths, transform, None))
        best["reduced"] = min(best["reduced"], _pass(paths, transform, transform.decode_min_side))
    full, reduced = len(paths) / best["full"], len(paths) / best["reduced"]
    return {
        "input": label,
        "transform": kind,
        "needs": transform.decode_min_side,
        "decoded_at": _scale(paths[0], transform.decode_min_side),
        "full_img_s": round(full, 1),
        "reduced_img_s": round(reduced, 1),
        "speedup": round(reduced / full, 2),
        "mad_255": round(_difference(paths, transform, pre), 3),
    }


def _memory_row(label: str, source: str, paths: list[Path], rounds: int) -> dict:
    """Items per CPU second decoded again vs from the in-memory cache (after its first fill)."""
    transform = eval_transform(INPUTS[label])
    cache = ImageCache(transform, len(paths))
    loads = [lambda p=p: load_image(p, min_side=transform.decode_min_side) for p in paths]
    for index, load in enumerate(loads):  # the first epoch fills it
        cache.get(index, load)
    best = {"decoded": float("inf"), "memory": float("inf")}
    for _ in range(rounds):
        start = time.process_time()
        for load in loads:
            transform(load())
        best["decoded"] = min(best["decoded"], time.process_time() - start)
        start = time.process_time()
        for index, load in enumerate(loads):
            cache.get(index, load)
        best["memory"] = min(best["memory"], time.process_time() - start)
    identical = all(
        torch.equal(cache.get(i, load), transform(load())) for i, load in enumerate(loads)
    )
    decoded, memory = len(paths) / best["decoded"], len(paths) / best["memory"]
    return {
        "input": label,
        "source": source,
        "decoded_img_s": round(decoded, 1),
        "memory_img_s": round(memory, 1),
        "speedup": round(memory / decoded, 2),
        "kb_per_image": round(ImageCache.bytes_per_image(transform) / 1024, 1),
        "identical": identical,
    }


def _shapes_pngs(folder: Path, n: int) -> list[Path]:
    """`n` shapes scenes written as the generator writes them (128 px PNG)."""
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        path = folder / f"shapes_{k}.png"
        render_scene(sample_scene(rng), rng).save(path, format="PNG", compress_level=1)
        paths.append(path)
    return paths


def run(quick: bool = False) -> dict[str, Any]:
    """Time both decodings for every input, transform and source size; see the module doc."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a DataLoader worker runs with
    n, rounds = (6, 2) if quick else (16, 3)
    rows, memory_rows = [], []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-images-") as folder:
            shapes = _shapes_pngs(Path(folder), 4 * n)
            memory_rows.append(
                _memory_row("vgg_tiny: 64 whole image", "shapes 128x128 PNG", shapes, rounds)
            )
            for width, height, noise in SOURCES:
                paths = []
                for k in range(n):
                    path = Path(folder) / f"{width}x{height}_{noise:g}_{k}.jpg"
                    photo(width, height, seed=k, noise=noise).save(path, quality=90)
                    paths.append(path)
                kbytes = round(sum(p.stat().st_size for p in paths) / len(paths) / 1024)
                source = {"source": f"{width}x{height}", "kb": kbytes}
                for label in INPUTS:
                    for kind in ("eval", "train"):
                        rows.append(_row(label, kind, paths, rounds) | source)
                if noise == SOURCES[-1][2] and (width, height) == SOURCES[0][:2]:
                    for label in ("vgg_tiny: 64 whole image", "224 whole image (crop=false)"):
                        jpeg = f"{width}x{height} JPEG ({kbytes} KB)"
                        memory_rows.append(_memory_row(label, jpeg, paths, rounds))
    finally:
        torch.set_num_threads(threads)
    markdown = _markdown(rows) + "\n\n" + _memory_markdown(memory_rows)
    return {"rows": rows, "memory_rows": memory_rows, "markdown": markdown}


def _memory_markdown(rows: list[dict]) -> str:
    lines = [
        "| encoder input | source | decoded again (items/s) | from memory (items/s) | speedup "
        "| memory per image | same tensor |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['input']} | {r['source']} | {r['decoded_img_s']} | {r['memory_img_s']} "
            f"| {r['speedup']:.2f}x | {r['kb_per_image']} KiB | {'yes' if r['identical'] else 'NO'} |"
        )
    lines.append(
        "\nA training item's image after the first epoch, per CPU second of one thread: read, "
        "decoded and transformed again (the loader without `data.image_cache`) vs normalised from "
        "the resized `uint8` pixels kept in memory (`ImageCache.get`; reduced-size JPEG decoding "
        "on both sides). Same tensor: `torch.equal` on every image."
    )
    return "\n".join(lines)


def _markdown(rows: list[dict]) -> str:
    lines = [
        "| encoder input | transform | source JPEG | needs (px) | decoded at | full (images/s) "
        "| reduced (images/s) | speedup | mean abs. difference (/255) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['input']} | {r['transform']} | {r['source']} ({r['kb']} KB) | {r['needs']} "
            f"| {r['decoded_at']} | {r['full_img_s']} | {r['reduced_img_s']} "
            f"| {r['speedup']:.2f}x | {r['mad_255']:.3f} |"
        )
    lines.append(
        "\nImages/s per CPU second of one loader worker (torch at 1 thread): "
        "`transform(load_image(path))` with every pixel decoded (full) vs with "
        "`min_side=transform.decode_min_side` (reduced: what the datasets do). Needs: the "
        "smallest side the transform's resize takes without enlarging; a JPEG is decoded at "
        "reduced scale only when both sides are at least twice that. Difference: mean absolute "
        "difference of the transformed tensors, un-normalised, same random crop and jitter. "
        f"Targets: {TARGET_SPEEDUP}x with a difference below {TARGET_MAD:.0f}/255 where the "
        "reduced decode applies."
    )
    return "\n".join(lines)
