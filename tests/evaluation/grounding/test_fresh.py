"""Fresh shapes scenes: drawn apart from the data set's splits, scored by exact colour+shape."""

from __future__ import annotations

import numpy as np
import pytest

from captioning.cli.fresh_shapes import main
from captioning.data.shapes import describe_scene, render_scene, sample_scene
from captioning.errors import CaptioningError
from captioning.evaluation.grounding.fresh import draw_fresh_scenes, fresh_scene_accuracy


def test_fresh_scenes_have_each_object_count_and_repeat_for_a_seed() -> None:
    scenes = draw_fresh_scenes(4, seed=3, image_size=128)
    assert sorted(len(objects) for objects, _ in scenes) == [1] * 4 + [2] * 4 + [3] * 4
    again = draw_fresh_scenes(4, seed=3, image_size=128)
    assert [o for o, _ in scenes] == [o for o, _ in again]
    assert [o for o, _ in draw_fresh_scenes(4, seed=4)] != [o for o, _ in scenes]


def test_fresh_scenes_are_not_the_data_sets_scenes() -> None:
    fresh = {tuple(objects) for objects, _ in draw_fresh_scenes(20, seed=0)}
    for split_index in range(3):  # the splits' streams for data.seed=0
        rng = np.random.default_rng([0, split_index])
        for _ in range(60):
            objects = sample_scene(rng)
            render_scene(objects, rng)
            describe_scene(objects, rng)
            assert tuple(objects) not in fresh


def _oracle(seed: int, *, swap_colours: bool = False):
    """Captions each fresh scene with the generator's own caption (optionally colours swapped)."""
    scenes = {image.tobytes(): objects for objects, image in draw_fresh_scenes(5, seed=seed)}
    rng = np.random.default_rng(0)

    def caption(images):
        texts = []
        for image in images:
            objects = scenes[image.tobytes()]
            if swap_colours and len(objects) == 2:
                a, b = objects
                objects = [
                    type(a)(a.shape, b.colour, a.size, a.x, a.y, a.side),
                    type(b)(b.shape, a.colour, b.size, b.x, b.y, b.side),
                ]
            texts.append(describe_scene(objects, rng, n=1)[0])
        return texts

    return caption


def test_the_generators_own_captions_are_exactly_right() -> None:
    result = fresh_scene_accuracy(_oracle(7), per_count=5, seed=7, batch_size=4)
    assert result.images == {1: 5, 2: 5, 3: 5}
    assert result.accuracy() == 1.0 and result.examples == {}


def test_captions_with_swapped_colours_count_as_wrong() -> None:
    result = fresh_scene_accuracy(_oracle(7, swap_colours=True), per_count=5, seed=7)
    assert result.accuracy(1) == 1.0 and result.accuracy(3) == 1.0
    pairs = [objects for objects, _ in draw_fresh_scenes(5, seed=7) if len(objects) == 2]
    # a swap changes the labels only when both the shapes and the colours differ
    changed = sum(a.shape != b.shape and a.colour != b.colour for a, b in pairs)
    assert changed > 0
    assert result.exact[2] == 5 - changed and len(result.examples[2]) == changed
    assert result.table().splitlines()[2].split() == [
        "2",
        "5",
        str(5 - changed),
        f"{(5 - changed) / 5:.1%}",
    ]


def test_a_captioner_returning_too_few_captions_is_one_clear_error() -> None:
    with pytest.raises(CaptioningError, match="captions for"):
        fresh_scene_accuracy(lambda images: ["a red circle"], per_count=2)


def test_the_command_prints_the_table_for_a_checkpoint(files, capsys) -> None:
    assert main(["-c", str(files["gru"]), "--device", "cpu", "--per-count", "3"]) == 0
    out = capsys.readouterr().out
    assert "objects  images  exact  accuracy" in out
    assert any(line.split()[:2] == ["all", "9"] for line in out.splitlines())
