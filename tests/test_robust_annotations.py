"""Annotation files (COCO caption files, Karpathy split files, data configs): malformed content is
one line naming the file and the ids, or skipped and counted with data.strict=false."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import (
    tiny_model_config,
)
from PIL import Image

from captioning.errors import CaptioningError

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
    from captioning.data.karpathy import load_karpathy

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


def test_karpathy_entry_problems(tmp_path, caplog):
    from captioning.data.karpathy import load_karpathy

    def entry(cocoid, sentences, **extra):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{cocoid}.jpg")
        return {
            "split": "train",
            "cocoid": cocoid,
            "filename": f"{cocoid}.jpg",
            "sentences": [{"raw": s} for s in sentences],
            **extra,
        }

    path = tmp_path / "dataset_coco.json"
    images = [entry(1, ["a dog", " . "]), entry(2, ["", "?"]), entry(3, ["a cat"])]
    path.write_text(json.dumps({"images": images}))
    with pytest.raises(CaptioningError, match=r"1 images without a caption, cocoids \[2\]"):
        load_karpathy(path, tmp_path, ["train"])
    with caplog.at_level("INFO", logger="captioning.data.karpathy"):
        records = load_karpathy(path, tmp_path, ["train"], strict=False)
    assert [r.image_id for r in records] == [1, 3] and records[0].captions == ("a dog",)
    assert "3 empty or punctuation-only sentences ignored" in caplog.text
    broken = [
        *images,
        {"split": "train", "cocoid": 4, "sentences": []},
        {"split": "train", "filename": "x.jpg", "sentences": [{"raw": "a"}]},
        {"split": "val", "junk": True},
    ]
    path.write_text(json.dumps({"images": broken}))
    with pytest.raises(CaptioningError, match=r"entries at positions \[3, 4\] lack"):
        load_karpathy(path, tmp_path, ["train"])


def test_split_config_without_files_is_a_one_line_error(tmp_path):
    from captioning.data.splits import load_split

    data = {"name": "mine", "root": str(tmp_path), "splits": {"train": {"images": "imgs"}}}
    with pytest.raises(
        CaptioningError, match=r"data\.splits\.train needs 'annotations' and 'images'"
    ):
        load_split(data, "train")
