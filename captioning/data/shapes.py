"""Synthetic "shapes" captioning dataset: coloured shapes on a gray background.

Kept as one file (about 360 lines): the images, captions and object ground truth come from
one spec, so they cannot drift apart.

A deterministic generator that writes 128x128 PNG images and COCO-format caption files::

    root/
      images/{train,val,test}/{split}_{index:06d}.png
      annotations/captions_{train,val,test}.json
      shapes_manifest.json

Each image holds 1 to 3 non-overlapping objects (circle / square / triangle, six colours,
two sizes) and has five true captions built from a small set of templates, so a tiny
CNN-LSTM can learn it in minutes on a CPU. Image entries carry an extra ``"objects"`` key with
the ground-truth objects (``shape``, ``colour``, ``size``, ``bbox`` ``[x, y, w, h]``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from captioning.errors import CaptioningError
from captioning.io import exclusive_lock, write_text_atomic

__all__ = [
    "COLOURS",
    "GENERATOR_VERSION",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "ShapeObject",
    "describe_scene",
    "generate_shapes",
    "relation",
    "render_scene",
    "sample_scene",
]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 140, 20),
}
SIZES = {"small": (18, 28), "large": (38, 52)}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
MANIFEST_NAME = "shapes_manifest.json"
LOCK_NAME = ".generating.lock"  # held while the data set is checked or written

_GAP = 2  # minimum free pixels between two bounding boxes
_BACKGROUND = (200, 255)  # gray level range, inclusive
_NOISE_STD = 6.0
_MAX_SPLIT = 10**7  # image ids are split_index * _MAX_SPLIT + index + 1
_NUM_CAPTIONS = 5

# Caption templates per object count. ``{0}``, ``{1}``, ``{2}`` are noun phrases ("a red
# circle"), ``{s0}`` is the first without its article ("red circle") and ``{rel}`` the relation
# of {0} to {1}. Templates without {rel} name the objects left to right, the others in a random
# order. RELATIONS: the phrases that state each value of :func:`relation`.
# fmt: off
_TEMPLATES: dict[int, tuple[str, ...]] = {
    1: ("{0}", "there is {0}", "{0} on a gray background", "a single {s0}",
        "an image of one {s0}", "one {s0} on a gray background"),
    2: ("{0} {rel} {1}", "{0} is {rel} {1}", "there is {0} {rel} {1}", "two shapes : {0} and {1}",
        "{0} and {1}", "two objects : {0} and {1}"),
    3: ("three shapes : {0} , {1} and {2}", "there are three objects : {0} , {1} and {2}",
        "{0} , {1} and {2}", "there are three shapes : {0} , {1} and {2}",
        "three objects : {2} and {0} {rel} {1}"),
}
RELATIONS: dict[str, tuple[str, ...]] = {
    "left": ("to the left of", "left of"), "right": ("to the right of", "right of"),
    "above": ("above",), "below": ("below",)}
# fmt: on


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene: its kind and its square bounding box.

    Attributes:
        shape: One of :data:`SHAPES`.
        colour: A key of :data:`COLOURS`.
        size: A key of :data:`SIZES` ("small" or "large").
        x: Left column of the bounding box.
        y: Top row of the bounding box.
        side: Width and height of the bounding box in pixels.
    """

    shape: str
    colour: str
    size: str
    x: int
    y: int
    side: int

    @property
    def centre(self) -> tuple[float, float]:
        """The bounding-box centre ``(cx, cy)`` in pixel coordinates (y grows downwards)."""
        return (self.x + self.side / 2, self.y + self.side / 2)

    def to_json(self) -> dict:
        """Returns the object as stored under an image's ``"objects"`` key (bbox x, y, w, h)."""
        bbox = [self.x, self.y, self.side, self.side]
        return {"shape": self.shape, "colour": self.colour, "size": self.size, "bbox": bbox}


def _apart(a: ShapeObject, b: ShapeObject) -> bool:
    """Whether two bounding boxes are separated by at least ``_GAP`` pixels on some axis."""
    return (
        a.x + a.side + _GAP <= b.x
        or b.x + b.side + _GAP <= a.x
        or a.y + a.side + _GAP <= b.y
        or b.y + b.side + _GAP <= a.y
    )


def sample_scene(rng: np.random.Generator, *, image_size: int = 128) -> list[ShapeObject]:
    """Draw 1 to 3 non-overlapping objects with distinct (colour, shape) pairs.

    Args:
        rng: Source of randomness; the result depends only on its state.
        image_size: Side of the square image in pixels.

    Returns:
        The objects, each wholly inside the image, bounding boxes at least 2 px apart.
    """
    if image_size < 2 * SIZES["large"][1] + _GAP:
        raise CaptioningError(f"image_size must be >= {2 * SIZES['large'][1] + _GAP}")
    count = int(rng.integers(1, 4))
    for _ in range(1000):
        pairs = rng.choice(len(SHAPES) * len(COLOURS), size=count, replace=False)
        objects: list[ShapeObject] = []
        for pair in pairs:
            shape, colour = SHAPES[pair % len(SHAPES)], list(COLOURS)[pair // len(SHAPES)]
            size = ("small", "large")[int(rng.integers(2))]
            lo, hi = SIZES[size]
            side = int(rng.integers(lo, hi + 1))
            for _ in range(100):
                x, y = (int(v) for v in rng.integers(0, image_size - side + 1, size=2))
                obj = ShapeObject(shape, colour, size, x, y, side)
                if all(_apart(obj, other) for other in objects):
                    objects.append(obj)
                    break
            else:
                break  # no room: start the scene again
        if len(objects) == count:
            return objects
    raise CaptioningError("could not place the objects; use a larger image_size")


def render_scene(
    objects: list[ShapeObject], rng: np.random.Generator, *, image_size: int = 128
) -> Image.Image:
    """Render objects on a noisy light-gray background.

    Args:
        objects: The scene, e.g. from :func:`sample_scene`.
        rng: Draws the gray level (200..255) and the background noise (std 6).
        image_size: Side of the square image in pixels.

    Returns:
        An RGB image; shape fills are the exact :data:`COLOURS` values (no noise, no
        antialiasing).
    """
    level = int(rng.integers(_BACKGROUND[0], _BACKGROUND[1] + 1))
    noise = rng.normal(0.0, _NOISE_STD, size=(image_size, image_size))
    gray = np.clip(np.rint(level + noise), 0, 255).astype(np.uint8)
    image = Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), mode="RGB")
    draw = ImageDraw.Draw(image)
    for obj in objects:
        fill = COLOURS[obj.colour]
        x0, y0, x1, y1 = obj.x, obj.y, obj.x + obj.side - 1, obj.y + obj.side - 1
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=fill)
        else:
            raise ValueError(f"unknown shape {obj.shape!r}")
    return image


def relation(a: ShapeObject, b: ShapeObject) -> str:
    """Where ``a`` is relative to ``b``, along the axis where their centres differ most.

    Args:
        a: The object being located.
        b: The reference object.

    Returns:
        "left" / "right" if ``|dx| >= |dy|``, else "above" / "below" (y grows downwards).
    """
    (ax, ay), (bx, by) = a.centre, b.centre
    if abs(ax - bx) >= abs(ay - by):
        return "left" if ax < bx else "right"
    return "above" if ay < by else "below"


def _caption(template: str, objects: list[ShapeObject], rng: np.random.Generator) -> str:
    """Fill one template with randomly chosen synonyms and object order."""
    with_size = bool(rng.integers(2))
    words = {name: str(rng.choice(options)) for name, options in SIZE_WORDS.items()}

    def phrase(obj: ShapeObject) -> str:
        size = f"{words[obj.size]} " if with_size else ""
        return f"{size}{obj.colour} {obj.shape}"

    def with_article(obj: ShapeObject) -> str:
        text = phrase(obj)
        return ("an " if text[0] in "aeiou" else "a ") + text

    if "{rel}" in template:
        order = [objects[int(i)] for i in rng.permutation(len(objects))]
    else:
        order = sorted(objects, key=lambda o: o.centre)
    rel = ""
    if len(order) >= 2:
        rel = str(rng.choice(RELATIONS[relation(order[0], order[1])]))
    nps = [with_article(obj) for obj in order]
    return template.format(*nps, s0=phrase(order[0]), rel=rel)


def describe_scene(
    objects: list[ShapeObject], rng: np.random.Generator, *, n: int = 5
) -> list[str]:
    """Write ``n`` different true captions of a scene.

    Every object is named as "[size] <colour> <shape>"; two-object relations ("left of",
    "above", ...) follow the centres along the axis where they differ most.

    Args:
        objects: The scene (1 to 3 objects).
        rng: Picks templates, object order and synonyms.
        n: Number of captions.

    Returns:
        ``n`` lowercase captions, words separated by single spaces; distinct whenever the
        templates allow it.
    """
    if not 1 <= len(objects) <= 3:
        raise ValueError(f"expected 1 to 3 objects, got {len(objects)}")
    templates = _TEMPLATES[len(objects)]
    captions: list[str] = []
    order = rng.permutation(len(templates))
    for i in range(n):
        template = templates[int(order[i % len(templates)])]
        for _ in range(20):
            text = _caption(template, objects, rng)
            if text not in captions:
                break
        captions.append(text)
    return captions


def _write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, separators=(",", ":")) + "\n")


def _generate_split(root: Path, split: str, count: int, seed: int, image_size: int) -> None:
    split_index = SPLITS.index(split)
    rng = np.random.default_rng([seed, split_index])
    image_dir = root / "images" / split
    if image_dir.exists():
        shutil.rmtree(image_dir)
    image_dir.mkdir(parents=True)
    images: list[dict] = []
    annotations: list[dict] = []
    pending: deque[Future] = deque()
    # Scenes are drawn in order from one rng; PNG encoding (which releases the GIL) runs in
    # a small thread pool. The output does not depend on the number of threads.
    with ThreadPoolExecutor(max_workers=2) as pool:
        for index in range(count):
            objects = sample_scene(rng, image_size=image_size)
            image = render_scene(objects, rng, image_size=image_size)
            captions = describe_scene(objects, rng, n=_NUM_CAPTIONS)
            file_name = f"{split}/{split}_{index:06d}.png"
            path = root / "images" / file_name
            pending.append(pool.submit(image.save, path, format="PNG", compress_level=1))
            if len(pending) > 64:  # bound the memory held by queued images
                pending.popleft().result()
            image_id = split_index * _MAX_SPLIT + index + 1
            entry = {"id": image_id, "file_name": file_name, "width": image_size}
            entry.update(height=image_size, objects=[obj.to_json() for obj in objects])
            images.append(entry)
            for k, caption in enumerate(captions):
                ann_id = image_id * 10 + k
                annotations.append({"id": ann_id, "image_id": image_id, "caption": caption})
        for future in pending:
            future.result()  # re-raise any write error
    data = {
        "info": {"description": "synthetic shapes captions", "version": str(GENERATOR_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
    }
    _write_json_atomic(root / "annotations" / f"captions_{split}.json", data)


def generate_shapes(
    root: str | os.PathLike,
    *,
    train: int = 6000,
    val: int = 500,
    test: int = 500,
    seed: int = 0,
    image_size: int = 128,
    overwrite: bool = False,
) -> Path:
    """Generate the shapes dataset under ``root``, or reuse it if already there.

    Args:
        root: Output folder (created if missing).
        train: Number of training images.
        val: Number of validation images.
        test: Number of test images.
        seed: Base seed; each split draws from ``numpy.random.default_rng([seed, split])``.
        image_size: Side of the square images in pixels.
        overwrite: Regenerate even if a matching dataset is on disk.

    Returns:
        ``root`` as a :class:`pathlib.Path`.
    """
    root = Path(root)
    sizes = {"train": train, "val": val, "test": test}
    for split, count in sizes.items():
        if not 0 <= count < _MAX_SPLIT:
            raise CaptioningError(f"{split} size must be in 0..{_MAX_SPLIT - 1}, got {count}")
    manifest = {"generator": "captioning.data.shapes", "version": GENERATOR_VERSION, "seed": seed}
    manifest.update(sizes=sizes, image_size=image_size, captions_per_image=_NUM_CAPTIONS)
    with exclusive_lock(root / LOCK_NAME, f"the shapes data set in {root}"):
        _generate(root, manifest, sizes, seed, image_size, overwrite)
    return root


def _generate(
    root: Path, manifest: dict, sizes: dict[str, int], seed: int, image_size: int, overwrite: bool
) -> None:
    """:func:`generate_shapes`, once its lock is held."""
    manifest_path = root / MANIFEST_NAME
    ann_paths = [root / "annotations" / f"captions_{split}.json" for split in SPLITS]
    if not overwrite and manifest_path.is_file() and all(p.is_file() for p in ann_paths):
        try:
            current = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            current = None
        if current == manifest:
            logger.info("shapes dataset up to date in %s", root)
            return
    start = time.perf_counter()
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # an interrupted run is redone next time
    for split in SPLITS:
        _generate_split(root, split, sizes[split], seed, image_size)
        logger.info("wrote %d %s images to %s", sizes[split], split, root / "images" / split)
    _write_json_atomic(manifest_path, manifest)
    logger.info("generated shapes dataset in %s (%.1f s)", root, time.perf_counter() - start)
