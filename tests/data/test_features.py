"""The frozen-encoder feature cache: fingerprints, contents, resumable builds, training from it."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from helpers import records_with_bad_files, tiny_model_config

from captioning.data.coco import load_coco_captions
from captioning.data.datasets import CaptionDataset
from captioning.data.features import (
    FeatureCaptionDataset,
    build_feature_cache,
    fingerprint,
    use_feature_cache,
)
from captioning.data.images import load_image
from captioning.data.loader import build_train_loader, start_epoch
from captioning.data.transforms import eval_transform
from captioning.errors import CaptioningError
from captioning.models.caption_model import build_model
from captioning.models.encoder import vgg_tiny
from captioning.training.objectives import caption_cross_entropy
from captioning.vocab import Vocabulary

CONFIG = {
    "_target_": "captioning.models.encoder.vgg_tiny",
    "width": 4,
    "image_size": 16,
    "vector_dim": 8,
    "trainable": False,
}


@pytest.fixture
def records(shapes_root):
    return load_coco_captions(
        shapes_root / "annotations" / "captions_val.json", shapes_root / "images"
    )


def encoder(seed: int = 0):
    torch.manual_seed(seed)
    return vgg_tiny(width=4, image_size=16, vector_dim=8, trainable=False)


class Counter:
    """Counts the images an encoder sees (a forward pre-hook)."""

    def __init__(self, module):
        self.images = 0
        module.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.images += args[0].shape[0]


def test_when_the_cache_is_used():
    assert use_feature_cache("auto", frozen=True, fine_tuning=False, augment=False)
    assert not use_feature_cache("auto", frozen=False, fine_tuning=False, augment=False)
    assert not use_feature_cache("auto", frozen=True, fine_tuning=False, augment=True)
    assert not use_feature_cache(False, frozen=True, fine_tuning=False, augment=False)
    assert use_feature_cache(True, frozen=True, fine_tuning=False, augment=False)
    with pytest.raises(CaptioningError, match="frozen encoder"):
        use_feature_cache("true", frozen=True, fine_tuning=True, augment=False)
    with pytest.raises(CaptioningError, match="auto, true or false"):
        use_feature_cache("sometimes", frozen=True, fine_tuning=False, augment=False)


def test_fingerprint_tracks_config_weights_images_and_preprocessing(records):
    enc = encoder()
    base = fingerprint(enc, CONFIG, records, enc.preprocess)
    assert fingerprint(encoder(), CONFIG, records, enc.preprocess) == base  # same weights
    assert fingerprint(encoder(seed=1), CONFIG, records, enc.preprocess) != base
    assert fingerprint(enc, {**CONFIG, "width": 5}, records, enc.preprocess) != base
    assert fingerprint(enc, CONFIG, records[:-1], enc.preprocess) != base
    other = vgg_tiny(width=4, image_size=24, vector_dim=8, trainable=False).preprocess
    assert fingerprint(enc, CONFIG, records, other) != base
    bn = enc.features[1]
    bn.running_mean += 1.0  # buffers are part of the weights
    assert fingerprint(enc, CONFIG, records, enc.preprocess) != base


def test_cache_holds_the_encoder_outputs_and_is_reused(records, tmp_path):
    enc = encoder()
    transform = eval_transform(enc.preprocess)
    count = Counter(enc)
    store = build_feature_cache(
        tmp_path,
        enc,
        records,
        transform,
        encoder_config=CONFIG,
        with_grid=True,
        batch_size=6,
        progress=False,
    )
    assert count.images == len(records) + 1  # (+1: the shape probe)
    images = torch.stack([transform(load_image(r.path)) for r in records[:3]])  # (3, 3, H, W)
    with torch.no_grad():
        want = enc(images)
    for i in range(3):
        row = store[i]
        assert row.vector.dtype == torch.float16 and row.grid.shape == (4, 16)
        torch.testing.assert_close(row.vector.float(), want.vector[i], rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(row.grid.float(), want.grid[i], rtol=1e-3, atol=1e-3)
    count.images = 0
    again = build_feature_cache(
        tmp_path, enc, records, transform, encoder_config=CONFIG, with_grid=False, progress=False
    )  # a grid cache serves too
    assert again.folder == store.folder and count.images == 0
    assert len(pickle.dumps(again)) < 20_000  # workers reopen the memory-maps, no copies


def test_a_data_set_regenerated_in_the_same_folder_gets_a_new_cache(tmp_path):
    """Same paths, same ids, different pixels (another seed written over the same folder): the
    cache built for the first data set is not served for the second."""
    from captioning.data.shapes import generate_shapes
    from captioning.data.splits import annotation_files

    def cached(seed: int):
        root = generate_shapes(tmp_path / "shapes", train=0, val=6, test=0, seed=seed)
        records = load_coco_captions(root / "annotations" / "captions_val.json", root / "images")
        data = {"root": str(root), "splits": {"val": {"annotations": "annotations/captions_val.json",
                                                       "images": "images"}}}  # fmt: skip
        enc = encoder()
        store = build_feature_cache(
            tmp_path / "cache",
            enc,
            records,
            eval_transform(enc.preprocess),
            encoder_config=CONFIG,
            with_grid=False,
            progress=False,
            sources=annotation_files(data, "val"),
        )
        return records, store

    first_records, first = cached(seed=1)
    second_records, second = cached(seed=2)
    assert [r.path for r in first_records] == [r.path for r in second_records]  # same paths
    assert second.folder != first.folder
    assert not torch.equal(second[0].vector, first[0].vector)  # the new pixels' features


def test_fingerprint_covers_file_size_and_modification_time(records, tmp_path):
    import os

    from captioning.data.records import ImageRecord

    copies = []
    for r in records[:3]:
        shutil.copy(r.path, tmp_path / r.path.name)
        copies.append(ImageRecord(r.image_id, tmp_path / r.path.name, r.captions))
    enc = encoder()
    base = fingerprint(enc, CONFIG, copies, enc.preprocess)
    stat = copies[1].path.stat()
    os.utime(copies[1].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fingerprint(enc, CONFIG, copies, enc.preprocess) != base
    ann = tmp_path / "ann.json"
    ann.write_text("[1]")
    with_ann = fingerprint(enc, CONFIG, copies, enc.preprocess, [ann])
    ann.write_text("[2]")
    assert fingerprint(enc, CONFIG, copies, enc.preprocess, [ann]) != with_ann


def test_vector_only_cache_and_new_weights_make_a_new_cache(records, tmp_path):
    enc = encoder()
    transform = eval_transform(enc.preprocess)
    store = build_feature_cache(
        tmp_path, enc, records, transform, encoder_config=CONFIG, with_grid=False, progress=False
    )
    assert store[0].grid.shape == (0, 16) and not (store.folder / "grid.npy").exists()
    with torch.no_grad():
        enc.classifier[0].weight.mul_(2.0)
    changed = build_feature_cache(
        tmp_path, enc, records, transform, encoder_config=CONFIG, with_grid=False, progress=False
    )
    assert changed.folder != store.folder
    assert not torch.equal(changed[0].vector, store[0].vector)


def test_an_interrupted_build_resumes_where_it_stopped(records, tmp_path):
    enc = encoder()
    transform = eval_transform(enc.preprocess)
    polls = iter(range(100))
    stopped = build_feature_cache(
        tmp_path / "a",
        enc,
        records,
        transform,
        encoder_config=CONFIG,
        batch_size=4,
        progress=False,
        should_stop=lambda: next(polls) >= 2,
    )  # after 2 batches
    assert stopped is None
    (folder,) = (tmp_path / "a").iterdir()
    assert json.loads((folder / "progress.json").read_text()) == {"done": 8, "complete": False}
    count = Counter(enc)
    resumed = build_feature_cache(
        tmp_path / "a", enc, records, transform, encoder_config=CONFIG, batch_size=4, progress=False
    )
    assert count.images == len(records) - 8 + 1  # only the rest (+1: the probe)
    straight = build_feature_cache(
        tmp_path / "b", enc, records, transform, encoder_config=CONFIG, batch_size=7, progress=False
    )
    for part in ("vector", "grid"):
        assert np.array_equal(
            np.load(resumed.folder / f"{part}.npy"), np.load(straight.folder / f"{part}.npy")
        )


@pytest.mark.parametrize("decoder", ["decoder.RNNDecoder", "attention_decoder.AttentionDecoder"])
def test_training_batches_from_the_cache_match_batches_of_images(records, tmp_path, decoder):
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    config = {
        "encoder": CONFIG,
        "decoder": {
            "_target_": f"captioning.models.{decoder}",
            "embed_dim": 8,
            "hidden_dim": 12,
            "dropout": 0.0,
        },
    }
    torch.manual_seed(0)
    model = build_model(config, vocab_size=len(vocab))
    transform = eval_transform(model.encoder.preprocess)
    store = build_feature_cache(
        tmp_path,
        model.encoder,
        records,
        transform,
        encoder_config=CONFIG,
        with_grid=model.decoder.has_attention,  # attention decoders need the grid
        progress=False,
    )
    cached = build_train_loader(
        FeatureCaptionDataset(store, records, vocab), batch_size=4, seed=1, num_workers=2
    )
    plain = build_train_loader(CaptionDataset(records, vocab, transform), batch_size=4, seed=1)
    model.train()  # a frozen encoder stays in eval mode: no dropout, fixed BN statistics
    for loader in (cached, plain):
        start_epoch(loader, 1)
    for a, b in zip(cached, plain, strict=True):
        assert a.images is None and b.features is None
        assert torch.equal(a.captions, b.captions) and torch.equal(a.image_ids, b.image_ids)
        features = a.features.apply(lambda f: f.float())  # (the cache stores float16)
        with torch.no_grad():
            from_cache, words = caption_cross_entropy(
                model, features, a.captions, a.lengths, a.image_index
            )
            from_images, _ = caption_cross_entropy(
                model, b.images, b.captions, b.lengths, b.image_index
            )
        torch.testing.assert_close(from_cache / words, from_images / words, rtol=2e-3, atol=1e-3)
    with pytest.raises(CaptioningError, match="other images"):
        FeatureCaptionDataset(store, records[1:], vocab)


TINY_MODEL = tiny_model_config(cell="gru", max_len=5)


def test_feature_cache_skips_unreadable_images(shapes_root, tmp_path):
    from captioning.data.features import FeatureCaptionDataset, build_feature_cache
    from captioning.data.loader import collate_captions
    from captioning.data.records import SkippedImage
    from captioning.data.transforms import eval_transform
    from captioning.models.encoder import vgg_tiny
    from captioning.vocab import Vocabulary

    records = records_with_bad_files(shapes_root, tmp_path, 1)
    records = records[1:4] + records[:1] + records[4:8]  # the bad one in the middle of a batch
    torch.manual_seed(0)
    encoder = vgg_tiny(width=4, image_size=16, vector_dim=8, trainable=False)
    store = build_feature_cache(
        tmp_path / "cache",
        encoder,
        records,
        eval_transform(encoder.preprocess),
        encoder_config=TINY_MODEL["encoder"],
        batch_size=3,
        progress=False,
    )
    bad_id = records[3].image_id
    assert list(store.skipped) == [bad_id] and records[3].path.name in store.skipped[bad_id]
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    data = FeatureCaptionDataset(store, records, vocab)
    assert isinstance(data[3], SkippedImage)
    with torch.no_grad():  # the good rows hold the encoder's features of their own image
        image = eval_transform(encoder.preprocess)(load_image(records[4].path))
        expected = encoder(image[None]).vector[0]
    assert torch.allclose(data[4][0].vector.float(), expected, atol=1e-2, rtol=1e-2)
    batch = collate_captions([data[k] for k in range(2, 6)])
    assert len(batch.skipped) == 1 and batch.features.vector.shape[0] == 3
