"""Loaders (captioning.data.loader): splits from the data config, collate, each image once,
unreadable images dropped.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from captioning.data.coco import load_coco_captions
from captioning.data.datasets import CaptionDataset, ImageDataset
from captioning.data.loader import build_loaders, collate_captions
from captioning.data.splits import load_split
from captioning.data.transforms import Preprocess, eval_transform
from captioning.errors import CaptioningError
from captioning.vocab import Vocabulary

PRE = Preprocess(
    resize_size=16, crop_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop=False
)


def test_collate_pads_and_keeps_lengths():
    items = [
        (torch.zeros(3, 4, 4), [torch.tensor([1, 5, 2]), torch.tensor([1, 2])], 7),
        (torch.ones(3, 4, 4), [torch.tensor([1, 5, 6, 8, 2])], 9),
    ]
    batch = collate_captions(items)
    assert batch.images.shape == (2, 3, 4, 4)  # each image once
    assert batch.captions.tolist() == [[1, 5, 2, 0, 0], [1, 2, 0, 0, 0], [1, 5, 6, 8, 2]]
    assert batch.lengths.tolist() == [3, 2, 5] and batch.image_ids.tolist() == [7, 7, 9]
    assert batch.image_index.tolist() == [0, 0, 1]


def test_loaders_cover_each_image_once(tiny_coco):
    data = {
        "root": str(tiny_coco),
        "splits": {
            "train": {"annotations": "annotations/captions_train.json", "images": "images"},
            "val": {"annotations": "annotations/captions_val.json", "images": "images"},
        },
    }
    train, val = load_split(data, "train"), load_split(data, "val")
    vocab = Vocabulary.build(c for r in train for c in r.captions)
    loaders = build_loaders(
        train_records=train,
        eval_records={"val": val},
        vocab=vocab,
        train_transform=eval_transform(PRE),
        eval_transform=eval_transform(PRE),
        batch_size=3,
        eval_batch_size=1,
    )
    seen = [i for b in loaders["val"] for i in b.image_ids.tolist()]
    assert sorted(seen) == [100, 101]
    n_captions = sum(len(b.image_ids) for b in loaders["train"])
    assert n_captions == 8
    for b in loaders["train"]:  # every caption points at its own image's row
        assert (
            b.image_ids
            == b.image_ids.unique_consecutive().repeat_interleave(torch.bincount(b.image_index))
        ).all()
    with pytest.raises(CaptioningError, match="no split"):
        load_split(data, "test")


def test_split_config_without_files_is_a_one_line_error(tmp_path):
    from captioning.data.splits import load_split

    data = {"name": "mine", "root": str(tmp_path), "splits": {"train": {"images": "imgs"}}}
    with pytest.raises(
        CaptioningError, match=r"data\.splits\.train needs 'annotations' and 'images'"
    ):
        load_split(data, "train")


def _records_with_bad_files(shapes_root, tmp_path, n_bad: int):
    """The shapes val records, with the first `n_bad` images replaced by broken files."""

    from captioning.data.records import ImageRecord

    records = load_coco_captions(
        shapes_root / "annotations" / "captions_val.json", shapes_root / "images"
    )
    copies = []
    for k, record in enumerate(records):
        path = tmp_path / "imgs" / record.path.name
        path.parent.mkdir(exist_ok=True)
        if k < n_bad:
            path.write_bytes(record.path.read_bytes()[:100])  # truncated
        else:
            shutil.copy(record.path, path)
        copies.append(ImageRecord(record.image_id, path, record.captions))
    return copies


def test_dataset_and_collate_drop_unreadable_images(shapes_root, tmp_path):
    from captioning.data.loader import collate_captions, collate_images
    from captioning.data.records import SkippedImage
    from captioning.data.transforms import eval_transform, imagenet_preprocess
    from captioning.vocab import Vocabulary

    records = _records_with_bad_files(shapes_root, tmp_path, 2)
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    transform = eval_transform(imagenet_preprocess(16))
    data = CaptionDataset(records, vocab, transform)
    items = [data[k] for k in range(4)]
    assert [isinstance(i, SkippedImage) for i in items] == [True, True, False, False]
    assert items[0].image_id == records[0].image_id and records[0].path.name in items[0].reason
    batch = collate_captions(items)
    assert batch.images.shape[0] == 2 and len(batch.skipped) == 2
    assert set(batch.image_ids.tolist()) == {records[2].image_id, records[3].image_id}
    empty = collate_captions(items[:2])
    assert empty.captions.shape == (0, 0) and empty.images is None and len(empty.skipped) == 2
    per_image = ImageDataset(records, transform)
    batch = collate_images([per_image[k] for k in range(3)])
    assert batch.image_ids.tolist() == [records[2].image_id] and len(batch.skipped) == 2
    assert collate_images([per_image[0]]).images.numel() == 0
