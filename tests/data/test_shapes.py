"""Tests for the synthetic shapes dataset generator (captioning.data.shapes)."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning.data.shapes import (
    COLOURS,
    SHAPES,
    SIZES,
    SPLITS,
    ShapeObject,
    describe_scene,
    generate_shapes,
    render_scene,
    sample_scene,
)

SMALL = {"train": 20, "val": 5, "test": 5}


RELATION_WORDS = ("left", "right", "above", "below")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("shapes"), **SMALL, seed=0)


def load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"captions_{split}.json").read_text())


def objects_of(entry: dict) -> list[ShapeObject]:
    return [
        ShapeObject(o["shape"], o["colour"], o["size"], o["bbox"][0], o["bbox"][1], o["bbox"][2])
        for o in entry["objects"]
    ]


def pairs_in(caption: str) -> list[tuple[int, str]]:
    """(word index, "colour shape") for every colour word directly followed by a shape word."""
    words = caption.split(" ")
    return [
        (i, f"{a} {b}")
        for i, (a, b) in enumerate(itertools.pairwise(words))
        if a in COLOURS and b in SHAPES
    ]


def true_relation(a: ShapeObject, b: ShapeObject) -> str:
    (ax, ay), (bx, by) = a.centre, b.centre
    if abs(ax - bx) >= abs(ay - by):
        return "left" if ax < bx else "right"
    return "above" if ay < by else "below"


def test_coco_layout(dataset: Path) -> None:
    from pycocotools.coco import COCO

    all_ids: set[int] = set()
    for split in SPLITS:
        coco = COCO(str(dataset / "annotations" / f"captions_{split}.json"))
        img_ids = coco.getImgIds()
        assert len(img_ids) == SMALL[split]
        assert not all_ids & set(img_ids), "image ids must be unique across splits"
        all_ids |= set(img_ids)
        for img in coco.loadImgs(img_ids):
            assert img["file_name"].startswith(f"{split}/{split}_")
            path = dataset / "images" / img["file_name"]
            assert path.is_file()
            with Image.open(path) as im:
                assert im.mode == "RGB" and im.size == (img["width"], img["height"]) == (128, 128)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert len(anns) == 5
            assert len({a["caption"] for a in anns}) == 5, "captions of an image should differ"
    manifest = json.loads((dataset / "shapes_manifest.json").read_text())
    assert manifest["sizes"] == SMALL and manifest["seed"] == 0


def test_deterministic(tmp_path: Path, dataset: Path) -> None:
    other = generate_shapes(tmp_path / "a", **SMALL, seed=0)
    for split in SPLITS:
        assert (other / "annotations" / f"captions_{split}.json").read_bytes() == (
            dataset / "annotations" / f"captions_{split}.json"
        ).read_bytes()
    files = sorted(p.relative_to(dataset) for p in (dataset / "images").rglob("*.png"))
    assert len(files) == sum(SMALL.values())
    assert files == sorted(p.relative_to(other) for p in (other / "images").rglob("*.png"))
    for rel in files:
        assert (dataset / rel).read_bytes() == (other / rel).read_bytes()

    changed = generate_shapes(tmp_path / "b", **SMALL, seed=1)
    assert load(changed, "train") != load(dataset, "train")
    name = "images/train/train_000000.png"
    assert (changed / name).read_bytes() != (dataset / name).read_bytes()


def test_rendering(dataset: Path) -> None:
    for split in SPLITS:
        for entry in load(dataset, split)["images"]:
            objects = objects_of(entry)
            assert 1 <= len(objects) <= 3
            pixels = np.asarray(Image.open(dataset / "images" / entry["file_name"]))
            mask = np.zeros(pixels.shape[:2], dtype=bool)
            for obj in objects:
                assert obj.shape in SHAPES and obj.colour in COLOURS
                lo, hi = SIZES[obj.size]
                assert lo <= obj.side <= hi
                assert obj.x >= 0 and obj.x + obj.side <= 128
                assert obj.y >= 0 and obj.y + obj.side <= 128
                cx, cy = obj.x + obj.side // 2, obj.y + obj.side // 2
                assert tuple(pixels[cy, cx]) == COLOURS[obj.colour]
                mask[
                    max(obj.y - 1, 0) : obj.y + obj.side + 1,
                    max(obj.x - 1, 0) : obj.x + obj.side + 1,
                ] = True
            for i, a in enumerate(objects):
                for b in objects[i + 1 :]:
                    apart = (
                        a.x + a.side + 2 <= b.x
                        or b.x + b.side + 2 <= a.x
                        or a.y + a.side + 2 <= b.y
                        or b.y + b.side + 2 <= a.y
                    )
                    assert apart, f"overlapping boxes {a} {b}"
            background = pixels[~mask].astype(int)
            assert np.abs(background[:, 0] - background[:, 1]).max() <= 2
            assert np.abs(background[:, 1] - background[:, 2]).max() <= 2
            assert background.min() >= 200 - 40 and abs(background.mean() - 227.5) <= 30
            assert 2 <= background[:, 0].std() <= 10, "background should carry mild noise"


def test_fills_are_exact() -> None:
    rng = np.random.default_rng(123)
    for _ in range(50):
        objects = sample_scene(rng)
        pixels = np.asarray(render_scene(objects, rng)).reshape(-1, 3)
        for obj in objects:
            count = np.all(pixels == COLOURS[obj.colour], axis=1).sum()
            assert count >= 0.4 * obj.side**2, "shape fill should be solid, un-noised colour"


def check_captions(objects: list[ShapeObject], captions: list[str]) -> None:
    by_pair = {f"{o.colour} {o.shape}": o for o in objects}
    assert len(by_pair) == len(objects)
    for caption in captions:
        assert caption == caption.lower().strip() and "  " not in caption
        found = pairs_in(caption)
        assert sorted(p for _, p in found) == sorted(by_pair), caption
        words = caption.split(" ")
        for rel_index in (i for i, w in enumerate(words) if w in RELATION_WORDS):
            before = [p for i, p in found if i < rel_index][-1]
            after = next(p for i, p in found if i > rel_index)
            assert words[rel_index] == true_relation(by_pair[before], by_pair[after]), caption
    assert len(set(captions)) == len(captions)


def test_captions_true(dataset: Path) -> None:
    seen_relation = False
    for split in SPLITS:
        data = load(dataset, split)
        captions: dict[int, list[str]] = {}
        for ann in data["annotations"]:
            captions.setdefault(ann["image_id"], []).append(ann["caption"])
        for entry in data["images"]:
            check_captions(objects_of(entry), captions[entry["id"]])
            seen_relation |= any(
                w in RELATION_WORDS for c in captions[entry["id"]] for w in c.split()
            )
    assert seen_relation


def test_captions_true_many_scenes() -> None:
    rng = np.random.default_rng(7)
    counts = {1: 0, 2: 0, 3: 0}
    vocab: set[str] = set()
    for _ in range(500):
        objects = sample_scene(rng)
        counts[len(objects)] += 1
        captions = describe_scene(objects, rng)
        assert len(captions) == 5
        check_captions(objects, captions)
        vocab.update(w for c in captions for w in c.split())
    assert all(n > 100 for n in counts.values()), counts
    assert len(vocab) <= 60, sorted(vocab)


def test_caching(tmp_path: Path) -> None:
    root = generate_shapes(tmp_path, **SMALL)
    files = [p for p in root.rglob("*") if p.is_file()]
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    time.sleep(0.05)
    start = time.perf_counter()
    assert generate_shapes(tmp_path, **SMALL) == root
    assert time.perf_counter() - start < 0.5
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes

    generate_shapes(tmp_path, **{**SMALL, "val": 3})
    assert len(load(root, "val")["images"]) == 3
    assert len(list((root / "images" / "val").glob("*.png"))) == 3
    assert (root / "annotations" / "captions_train.json").stat().st_mtime_ns != mtimes[
        root / "annotations" / "captions_train.json"
    ]

    # An interrupted run (no manifest) is redone; overwrite=True always regenerates.
    (root / "shapes_manifest.json").unlink()
    generate_shapes(tmp_path, **SMALL)
    assert (root / "shapes_manifest.json").is_file()
    before = (root / "shapes_manifest.json").stat().st_mtime_ns
    time.sleep(0.05)
    generate_shapes(tmp_path, **SMALL, overwrite=True)
    assert (root / "shapes_manifest.json").stat().st_mtime_ns != before


def test_a_second_generator_waits_for_the_first_and_reuses_its_data(tmp_path: Path) -> None:
    """Two runs started together on a missing data set: the one that finds it being written
    waits for the lock, then finds it up to date (before the lock both wrote at once and one
    failed on the other's half-written folders)."""
    import fcntl
    import threading

    from captioning.data.shapes import LOCK_NAME

    root = tmp_path / "shapes"
    root.mkdir()
    done: list[Path] = []
    with open(root / LOCK_NAME, "a+b") as held:  # another process is generating
        fcntl.flock(held, fcntl.LOCK_EX)
        second = threading.Thread(
            target=lambda: done.append(generate_shapes(root, train=4, val=2, test=2))
        )
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive() and not done  # waiting, having written nothing
        assert not (root / "shapes_manifest.json").exists() and not (root / "images").exists()
        fcntl.flock(held, fcntl.LOCK_UN)
    second.join(timeout=60)
    assert done == [root] and (root / "shapes_manifest.json").is_file()
    before = (root / "annotations" / "captions_train.json").stat().st_mtime_ns
    generate_shapes(root, train=4, val=2, test=2)  # up to date: not written again
    assert (root / "annotations" / "captions_train.json").stat().st_mtime_ns == before
