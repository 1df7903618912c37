"""COCO caption files (captioning.data.coco): records, the 2014 and 2017 layouts, malformed files as
one-line errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import compose_train, tiny_model_config, write_flickr, write_image
from PIL import Image

from captioning.data.coco import load_coco_captions, write_coco_captions
from captioning.data.karpathy import load_karpathy
from captioning.data.splits import load_split
from captioning.errors import CaptioningError
from captioning.evaluation import load_references
from captioning.training.config import parse_config


def test_records_from_coco_file(tiny_coco):
    records = load_coco_captions(
        tiny_coco / "annotations/captions_train.json", tiny_coco / "images"
    )
    assert [r.image_id for r in records] == [1, 2, 3, 4]
    assert records[0].captions == ("A red circle.", "a red ball")
    assert records[1].path == tiny_coco / "images" / "b.jpg"


def test_annotation_problems_are_clear(tiny_coco, tmp_path):
    with pytest.raises(CaptioningError, match="not found"):
        load_coco_captions(tmp_path / "nope.json", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg"}],
                "annotations": [{"id": 1, "image_id": 5, "caption": "x"}],
            }
        )
    )
    with pytest.raises(CaptioningError, match=r"not in 'images'.*5"):
        load_coco_captions(bad, tiny_coco / "images")
    (tiny_coco / "images" / "c.jpg").unlink()
    with pytest.raises(CaptioningError, match="missing"):
        load_coco_captions(tiny_coco / "annotations/captions_train.json", tiny_coco / "images")
    kept = load_coco_captions(
        tiny_coco / "annotations/captions_train.json", tiny_coco / "images", strict=False
    )
    assert [r.image_id for r in kept] == [1, 2, 4]


# -- COCO 2017 ------------------------------------------------------------------------------------


def test_coco2017_reads_the_2017_files(tmp_path):
    for split, start in (("train", 9), ("val", 139)):
        images, anns = [], []
        for k in range(3 if split == "train" else 2):
            name = f"{start + k:012d}.jpg"
            write_image(tmp_path / f"{split}2017" / name, k)
            images.append({"id": start + k, "file_name": name, "height": 10, "width": 12})
            anns.append({"id": 100 * start + k, "image_id": start + k, "caption": f"a cat {k}"})
        path = tmp_path / "annotations" / f"captions_{split}2017.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"images": images, "annotations": anns}))
    data = parse_config(compose_train("data=coco2017", f"data.root={tmp_path}")).data
    assert [r.image_id for r in load_split(data, "train")] == [9, 10, 11]
    assert [r.image_id for r in load_split(data, "test")] == [139, 140]  # val doubles as test
    assert load_split(data, "val")[0].path == tmp_path / "val2017" / "000000000139.jpg"


# -- references for results mode ------------------------------------------------------------------


def test_any_split_becomes_a_coco_references_file(tmp_path):
    write_flickr(tmp_path, {"train": 2, "val": 1, "test": 2})
    data = parse_config(compose_train("data=flickr8k", f"data.root={tmp_path}")).data
    records = load_split(data, "test")
    path = write_coco_captions(records, tmp_path / "refs.json", image_dir=tmp_path)
    assert load_references(path) == {r.image_id: list(r.captions) for r in records}
    images = json.loads(path.read_text())["images"]
    assert images[0] == {"id": 3, "file_name": f"Flicker8k_Dataset/{1000 + 37 * 3}_0003.jpg"}


TINY_MODEL = tiny_model_config(cell="gru", max_len=5)


def _coco(tmp_path: Path, images: list, annotations: list, name: str = "ann.json") -> Path:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for image in images:
        if isinstance(image, dict) and image.get("file_name"):
            Image.new("RGB", (8, 8)).save(folder / image["file_name"])
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


GOOD_IMAGES = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}]
GOOD_ANNS = [
    {"id": 10, "image_id": 1, "caption": "a red box"},
    {"id": 20, "image_id": 2, "caption": "a blue box"},
]


@pytest.mark.parametrize(
    "images, annotations, message",
    [
        (
            [{"file_name": "a.png"}, *GOOD_IMAGES],
            GOOD_ANNS,
            r"'images' entries without an integer 'id' at positions \[0\]",
        ),
        (
            [*GOOD_IMAGES, {"id": 7}, {"id": 8, "file_name": ""}],
            GOOD_ANNS,
            r"images without a 'file_name', ids \[7, 8\]",
        ),
        (
            [*GOOD_IMAGES, {"id": 1, "file_name": "c.png"}],
            GOOD_ANNS,
            r"image ids listed twice: \[1\]",
        ),
        (
            GOOD_IMAGES,
            [*GOOD_ANNS, {"id": 11, "caption": "x"}, {"id": 12, "image_id": "2", "caption": "x"}],
            r"annotations without an integer 'image_id', annotation ids \[11, 12\]",
        ),
        (
            GOOD_IMAGES,
            [*GOOD_ANNS, {"id": 13, "image_id": 1}, {"id": 14, "image_id": 1, "caption": 5}],
            r"annotations without a 'caption' string, annotation ids \[13, 14\]",
        ),
        (
            GOOD_IMAGES,
            [{"image_id": 1, "caption": "a box"}, *GOOD_ANNS, "junk"],
            r"'annotations' entries without an 'id' at positions \[0, 3\]",
        ),
    ],
)
def test_malformed_coco_entries_are_one_line_errors(tmp_path, images, annotations, message):
    """(pycocotools itself would raise a KeyError deep in COCO.createIndex for several of these.)"""
    from captioning.data.coco import load_coco_captions

    path = _coco(tmp_path, images, annotations)
    with pytest.raises(CaptioningError, match=message) as info:
        load_coco_captions(path, tmp_path / "images")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_files_that_are_not_coco_json_are_one_line_errors(tmp_path):
    from captioning.data.coco import load_coco_captions

    cases = {
        "broken.json": ('{"images": [', "is not valid JSON"),
        "list.json": ("[1, 2]", "found a JSON list"),
        "half.json": ('{"images": []}', "expected an object with 'images' and 'annotations'"),
        "latin1.json": (b"\xff\xfe\x00junk", "cannot read"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(CaptioningError, match=message) as info:
            load_coco_captions(path, tmp_path)
        assert name in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CaptioningError, match="not a Karpathy split file"):
        load_karpathy(tmp_path / "list.json", tmp_path, ["train"])
    with pytest.raises(CaptioningError, match="is not valid JSON"):
        load_karpathy(tmp_path / "broken.json", tmp_path, ["train"])


def test_coco_content_problems_are_errors_when_strict_and_counted_otherwise(tmp_path, caplog):
    from captioning.data.coco import load_coco_captions

    images = [*GOOD_IMAGES, {"id": 3, "file_name": "c.png"}, {"id": 4, "file_name": "d.png"}]
    annotations = [
        *GOOD_ANNS,
        {"id": 30, "image_id": 3, "caption": "  "},  # image 3: only empty captions
        {"id": 21, "image_id": 2, "caption": "?!"},
        {"id": 40, "image_id": 4, "caption": "a green box"},
        {"id": 90, "image_id": 99, "caption": "an orphan"},
    ]
    path = _coco(tmp_path, images, annotations)
    (tmp_path / "images" / "d.png").unlink()
    with pytest.raises(CaptioningError) as info:
        load_coco_captions(path, tmp_path / "images")
    message = str(info.value)
    assert "\n" not in message and "data.strict=false" in message
    for part in (
        "2 empty or punctuation-only captions, annotation ids [21, 30]",
        "1 images without a caption, ids [3]",
        "1 captions of image ids not in 'images': [99]",
    ):
        assert part in message, message
    with caplog.at_level("WARNING", logger="captioning.data.coco"):
        records = load_coco_captions(path, tmp_path / "images", strict=False)
    assert [(r.image_id, r.captions) for r in records] == [
        (1, ("a red box",)),
        (2, ("a blue box",)),
    ]
    logged = " | ".join(r.getMessage() for r in caplog.records)
    for part in (
        "skipped 2 empty or punctuation-only captions, annotation ids [21, 30]",
        "skipped 1 images without a caption, ids [3]",
        "[99]",
        "1 of 3 image files listed",
        "d.png",
    ):
        assert part in logged, logged
    (tmp_path / "images" / "d.png").write_bytes(b"")  # there again: only the content errors left
    with pytest.raises(CaptioningError, match="empty or punctuation-only"):
        load_coco_captions(path, tmp_path / "images")


compose_cfg = compose_train


def test_coco_config_reads_the_2014_files(tmp_path):
    for split, start in (("train", 1), ("val", 100)):
        folder = tmp_path / f"{split}2014"
        folder.mkdir()
        images, anns = [], []
        for k in range(3):
            name = f"COCO_{split}2014_{start + k:012d}.jpg"
            Image.new("RGB", (20, 20), (k * 80, 0, 0)).save(folder / name)
            images.append({"id": start + k, "file_name": name})
            anns.append({"id": start + k, "image_id": start + k, "caption": f"a red box {k}"})
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / f"captions_{split}2014.json").write_text(
            json.dumps({"images": images, "annotations": anns})
        )
    cfg = compose_cfg("data=coco", f"data.root={tmp_path}")
    assert cfg.data.max_len == 16 and cfg.data.min_count == 5
    assert [r.image_id for r in load_split(cfg.data, "train")] == [1, 2, 3]
    assert load_split(cfg.data, "test") == load_split(cfg.data, "val")  # val2014 doubles as test
