import json

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


def test_records_from_coco_file(tiny_coco):
    records = load_coco_captions(
        tiny_coco / "annotations/captions_train.json", tiny_coco / "images"
    )
    assert [r.image_id for r in records] == [1, 2, 3, 4]
    assert records[0].captions == ("A red circle.", "a red ball")
    assert records[1].path == tiny_coco / "images" / "b.jpg"


def test_per_caption_and_per_image_views(tiny_coco):
    records = load_coco_captions(
        tiny_coco / "annotations/captions_train.json", tiny_coco / "images"
    )
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    captions = CaptionDataset(records, vocab, eval_transform(PRE))
    assert len(captions) == 4 and captions.num_captions == 8  # every caption once per epoch
    image, ids, image_id = captions[0]
    assert image.shape == (3, 16, 16) and image_id == 1
    assert [vocab.decode(c) for c in ids] == ["a red circle", "a red ball"]
    images = ImageDataset(records, eval_transform(PRE))
    assert len(images) == 4  # one item per image
    assert images.references()[2] == ["A blue square", "blue box on gray"]


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
