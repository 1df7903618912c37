"""The caption and image data sets (captioning.data.datasets): item formats, per-caption and per-
image views, seeded augmentation.
"""

from __future__ import annotations

import torch
from PIL import Image

from captioning.data.coco import load_coco_captions
from captioning.data.datasets import CaptionDataset, ImageDataset
from captioning.data.features import FeatureCaptionDataset
from captioning.data.records import ImageRecord
from captioning.data.transforms import Preprocess, eval_transform
from captioning.vocab import Vocabulary

PRE = Preprocess(
    resize_size=16, crop_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop=False
)


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


def test_datasets_keep_their_item_format(tmp_path):

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    recs = [ImageRecord(7, tmp_path / "a.png", ("a red ball", "the ball"))]
    vocab = Vocabulary.build(["a red ball the"])
    data = CaptionDataset(recs, vocab, lambda image: torch.zeros(3, 2, 2))
    image, captions, image_id = data[0]
    assert image.shape == (3, 2, 2) and image_id == 7 and data.num_captions == 2
    assert [vocab.decode(c) for c in captions] == ["a red ball", "the ball"]

    class Store:
        image_ids, skipped, folder = [7], {}, "cache"

        def __getitem__(self, row):
            return "features"

    cached = FeatureCaptionDataset(Store(), recs, vocab, max_len=1)
    assert cached[0][0] == "features" and [c.tolist() for c in cached[0][1]] == [
        vocab.encode("a", max_len=1),
        vocab.encode("the", max_len=1),
    ]


def test_augmentation_depends_only_on_seed_epoch_and_item(shapes_root):
    from captioning.data.coco import load_coco_captions
    from captioning.data.datasets import CaptionDataset
    from captioning.data.transforms import imagenet_preprocess, train_transform
    from captioning.vocab import Vocabulary

    records = load_coco_captions(
        shapes_root / "annotations" / "captions_val.json", shapes_root / "images"
    )[:3]
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    augment = train_transform(imagenet_preprocess(32), augment=True)
    data = CaptionDataset(records, vocab, augment, seed=7)
    data.set_epoch(1)
    first = data[2][0]
    torch.manual_seed(123)  # the global generator neither matters nor moves
    state = torch.get_rng_state()
    again = data[2][0]
    assert torch.equal(first, again) and torch.equal(torch.get_rng_state(), state)
    data.set_epoch(2)
    assert not torch.equal(data[2][0], first)  # a new augmentation every epoch
    other = CaptionDataset(records, vocab, augment, seed=8)
    other.set_epoch(1)
    assert not torch.equal(other[2][0], first)


def _five_caption_records(tmp_path, n: int = 6) -> list[ImageRecord]:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    words = "one two three four five"
    return [
        ImageRecord(i + 1, tmp_path / "a.png", tuple(f"{w} {i}" for w in words.split()[: 2 + i]))
        for i in range(n)
    ]


def test_captions_per_image_draws_k_distinct_captions_afresh_each_epoch(tmp_path):
    records = _five_caption_records(tmp_path)  # 2 .. 7 captions per image
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    data = CaptionDataset(
        records, vocab, lambda image: torch.zeros(1), captions_per_image=3, caption_seed=4
    )
    assert data.num_captions == 2 + 3 * 5  # the 2-caption image brings both
    seen: dict[int, set[str]] = {i: set() for i in range(len(records))}
    for epoch in range(1, 9):
        data.set_epoch(epoch)
        for i, record in enumerate(records):
            texts = [vocab.decode(c) for c in data[i][1]]
            assert len(texts) == min(3, len(record.captions)) == len(set(texts))
            assert set(texts) <= set(record.captions)
            assert texts == sorted(texts, key=record.captions.index)  # in their file order
            seen[i].update(texts)
    assert all(seen[i] == set(r.captions) for i, r in enumerate(records))  # none left out
    # the draw depends on (seed, epoch, item) only: the same in a new process or a resumed run
    again = CaptionDataset(
        records, vocab, lambda image: torch.zeros(1), captions_per_image=3, caption_seed=4
    )
    again.set_epoch(8)
    assert [c.tolist() for c in again[5][1]] == [c.tolist() for c in data[5][1]]
    other = CaptionDataset(
        records, vocab, lambda image: torch.zeros(1), captions_per_image=3, caption_seed=5
    )
    draws = {}
    for name, ds in (("a", again), ("b", other)):
        draws[name] = []
        for epoch in range(1, 9):
            ds.set_epoch(epoch)
            draws[name].append([c.tolist() for c in ds[5][1]])
    assert draws["a"] != draws["b"]


def test_every_training_view_draws_the_same_captions(tmp_path):
    records = _five_caption_records(tmp_path)
    vocab = Vocabulary.build(c for r in records for c in r.captions)

    class Store:
        image_ids, skipped, folder = [r.image_id for r in records], {}, "cache"

        def __getitem__(self, row):
            return "features"

    images = CaptionDataset(
        records, vocab, lambda image: torch.zeros(1), captions_per_image=2, caption_seed=1
    )
    features = FeatureCaptionDataset(Store(), records, vocab, captions_per_image=2, seed=1)
    for data in (images, features):
        data.set_epoch(3)
    for i in range(len(records)):
        assert [c.tolist() for c in images[i][1]] == [c.tolist() for c in features[i][1]]
