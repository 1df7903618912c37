"""Caption shapes scenes drawn afresh from the generator's spec, never seen in training.

The test split measures a model on images of the training distribution, but they come from
the seeds the data set was generated with. This check draws new scenes from
:func:`~captioning.data.shapes.sample_scene` and :func:`~captioning.data.shapes.render_scene`
with a random stream the data set never uses (``numpy.random.default_rng([seed, 1000])``;
the splits use ``[data.seed, 0..2]``), captions them, and counts per number of objects how
many captions name exactly the scene's colours and shapes (the ``exact_match`` of
:mod:`captioning.evaluation.grounding.shapes`: the multiset of named ``colour shape`` labels
equals the scene's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from captioning.data.shapes import ShapeObject, render_scene, sample_scene
from captioning.errors import CaptioningError
from captioning.evaluation.grounding.shapes import shapes_grounding

__all__ = ["FRESH_SEED", "FRESH_STREAM", "FreshScenes", "draw_fresh_scenes", "fresh_scene_accuracy"]

#: default seed of the fresh scenes; the stream index below keeps them apart from any split
FRESH_SEED = 2026
#: the generator's splits draw from streams 0, 1, 2 (train, val, test); fresh scenes from this one
FRESH_STREAM = 1000


@dataclass(frozen=True)
class FreshScenes:
    """Exact-match counts per number of objects in the scene.

    Attributes:
        images: ``{count: images drawn with that many objects}``.
        exact: ``{count: images whose caption names exactly their colours and shapes}``.
        examples: up to five ``(caption, true labels)`` per count that were wrong.
    """

    images: dict[int, int]
    exact: dict[int, int]
    examples: dict[int, list[tuple[str, list[str]]]]

    def accuracy(self, count: int | None = None) -> float:
        """Fraction exactly right, for scenes of `count` objects (None: all scenes)."""
        counts = [count] if count is not None else sorted(self.images)
        total = sum(self.images.get(c, 0) for c in counts)
        return sum(self.exact.get(c, 0) for c in counts) / total if total else float("nan")

    def table(self) -> str:
        """A small console table: objects, images, exactly right, accuracy."""
        rows = ["objects  images  exact  accuracy"]
        for c in sorted(self.images):
            rows.append(f"{c:7d}  {self.images[c]:6d}  {self.exact[c]:5d}  {self.accuracy(c):8.1%}")
        n, k = sum(self.images.values()), sum(self.exact.values())
        rows.append(f"{'all':>7}  {n:6d}  {k:5d}  {self.accuracy():8.1%}")
        return "\n".join(rows)


def draw_fresh_scenes(
    per_count: int, *, seed: int = FRESH_SEED, image_size: int = 128
) -> list[tuple[list[ShapeObject], Image.Image]]:
    """Scenes from the generator's spec: `per_count` with each of 1, 2 and 3 objects.

    Scenes are drawn in order from one stream and kept while their object count still needs
    images, so the result depends only on `seed`, `per_count` and `image_size`.
    """
    if per_count < 1:
        raise CaptioningError(f"per_count must be >= 1, got {per_count}")
    rng = np.random.default_rng([seed, FRESH_STREAM])
    need = {1: per_count, 2: per_count, 3: per_count}
    scenes = []
    while any(need.values()):
        objects = sample_scene(rng, image_size=image_size)
        image = render_scene(objects, rng, image_size=image_size)
        if need[len(objects)] > 0:
            need[len(objects)] -= 1
            scenes.append((objects, image))
    return scenes


def fresh_scene_accuracy(
    caption: Callable[[Sequence[Image.Image]], list[str]],
    *,
    per_count: int = 300,
    seed: int = FRESH_SEED,
    image_size: int = 128,
    batch_size: int = 100,
) -> FreshScenes:
    """Caption fresh scenes and count exact colour-and-shape matches per object count.

    Args:
        caption: captions a batch of PIL images, one string each (e.g.
            ``lambda ims: captioner.caption(list(ims))``).
        per_count: scenes with each of 1, 2 and 3 objects.
        seed: the fresh scenes' seed (the stream never used by the data set's splits).
        image_size: the scenes' side in pixels (the generator's default: 128).
        batch_size: images per call of `caption`.

    Returns:
        The counts, with a few wrong captions per object count.
    """
    scenes = draw_fresh_scenes(per_count, seed=seed, image_size=image_size)
    predictions: dict[int, str] = {}
    for start in range(0, len(scenes), batch_size):
        chunk = scenes[start : start + batch_size]
        texts = caption([image for _, image in chunk])
        if len(texts) != len(chunk):
            raise CaptioningError(f"caption returned {len(texts)} captions for {len(chunk)} images")
        predictions.update({start + k: text for k, text in enumerate(texts)})
    objects = {k: scene[0] for k, scene in enumerate(scenes)}
    report = shapes_grounding(predictions, objects)
    images: dict[int, int] = {}
    exact: dict[int, int] = {}
    examples: dict[int, list[tuple[str, list[str]]]] = {}
    for k, grounding in report.per_image.items():
        count = len(objects[k])
        images[count] = images.get(count, 0) + 1
        exact[count] = exact.get(count, 0) + bool(grounding.exact_match)
        if not grounding.exact_match and len(examples.setdefault(count, [])) < 5:
            examples[count].append((predictions[k], list(grounding.present)))
    return FreshScenes(images, exact, examples)
