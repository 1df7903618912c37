"""Training images kept in memory (captioning.data.image_cache, ``data.image_cache``): the same
tensors as decoding every time, each file read once, and the one-line refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.data import datasets
from captioning.data.datasets import CaptionDataset
from captioning.data.image_cache import use_image_cache
from captioning.data.records import ImageRecord, SkippedImage
from captioning.data.splits import load_split
from captioning.data.transforms import Preprocess, eval_transform, train_transform
from captioning.distributed import DistContext
from captioning.errors import CaptioningError
from captioning.models.caption_model import build_model
from captioning.training import parse_config
from captioning.training.run_data import train_dataset
from captioning.vocab import Vocabulary
from tests.helpers import tiny_cfg

PRE = Preprocess(resize_size=24, crop_size=20, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))


def _records(tmp_path: Path, n: int = 4) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (30 + i, 41, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(i + 1, path, ("a red ball", "the ball")))
    return records


def test_pixels_then_finish_equals_the_whole_transform(tmp_path):
    image = Image.open(_records(tmp_path, 1)[0].path)
    for pre in (PRE, Preprocess(20, 20, PRE.mean, PRE.std, crop=False)):
        transform = eval_transform(pre)
        pixels = transform.pixels(image)
        assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == transform.output_size
        assert torch.equal(transform.finish(pixels), transform(image))


def test_cached_items_are_identical_and_each_file_is_read_once(tmp_path, monkeypatch):
    records = _records(tmp_path)
    vocab = Vocabulary.build(["a red ball the"])
    plain = CaptionDataset(records, vocab, eval_transform(PRE))
    cached = CaptionDataset(records, vocab, eval_transform(PRE), cache_images=True)
    reads = []
    load = datasets.load_image
    monkeypatch.setattr(
        datasets, "load_image", lambda path, **kw: reads.append(path) or load(path, **kw)
    )
    for _epoch in range(3):
        for i in range(len(records)):
            want, got = plain[i], cached[i]
            assert torch.equal(want[0], got[0]) and want[2] == got[2]
            assert [c.tolist() for c in want[1]] == [c.tolist() for c in got[1]]
    # the plain dataset read every image every epoch, the cached one once
    assert len(reads) == 3 * len(records) + len(records)
    assert len(cached.cache) == len(records)


def test_an_unreadable_image_is_skipped_every_time_and_not_cached(tmp_path):
    records = _records(tmp_path, 2)
    records[1].path.write_bytes(b"not a png")
    data = CaptionDataset(records, Vocabulary.build(["a"]), eval_transform(PRE), cache_images=True)
    for _ in range(2):
        assert isinstance(data[1], SkippedImage) and not isinstance(data[0], SkippedImage)
    assert len(data.cache) == 1


def test_auto_caches_only_deterministic_in_process_loading_that_fits():
    fixed, random = eval_transform(PRE), train_transform(PRE, augment=True)
    kw = {"images": 1000, "num_workers": 0, "max_gb": 1.0}
    assert use_image_cache("auto", transform=fixed, **kw)
    assert not use_image_cache("auto", transform=random, **kw)
    assert not use_image_cache("auto", transform=fixed, **{**kw, "num_workers": 2})
    # 1000 images of 3 x 20 x 20 bytes = 1.2 MB: over a 1 MB budget
    assert not use_image_cache("auto", transform=fixed, **{**kw, "max_gb": 1e-3})
    assert use_image_cache("true", transform=fixed, **{**kw, "max_gb": 1e-3})
    assert not use_image_cache(False, transform=fixed, **kw)


@pytest.mark.parametrize(
    ("augment", "workers", "needle"),
    [(True, 0, "data.augment=false"), (False, 2, "trainer.num_workers=0")],
)
def test_forcing_the_cache_where_it_cannot_work_is_one_line(augment, workers, needle):
    transform = train_transform(PRE, augment=augment)
    with pytest.raises(CaptioningError, match=needle) as info:
        use_image_cache(True, images=10, transform=transform, num_workers=workers, max_gb=1.0)
    assert "\n" not in str(info.value)
    with pytest.raises(CaptioningError, match="use auto, true or false"):
        use_image_cache("ram", images=10, transform=transform, num_workers=0, max_gb=1.0)


@pytest.mark.parametrize(
    ("overrides", "cached"),
    [((), True), (("data.augment=true",), False), (("data.image_cache=false",), False)],
)
def test_a_run_caches_its_training_images_unless_they_change_or_it_is_told_not_to(
    shapes_root, overrides, cached
):
    config = parse_config(tiny_cfg(shapes_root, *overrides))
    records = load_split(config.data, "train")
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    data = train_dataset(
        config.data,
        build_model(config, vocab_size=len(vocab)),
        records,
        vocab,
        encoder_config=config.encoder.to_dict(),
        seed=0,
        fine_tuning=False,
        device=torch.device("cpu"),
        ctx=DistContext(),
        batch_size=4,
        num_workers=0,
    )
    assert isinstance(data, CaptionDataset) and (data.cache is not None) == cached
