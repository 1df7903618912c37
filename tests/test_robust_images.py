"""Bad images (corrupt, truncated, empty, not an image, decompression bombs): loaded or refused
with one line naming the file; captioning, training, evaluation and the feature cache go on past
them."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    run_tool,
    tiny_checkpoint,
    tiny_model_config,
)
from PIL import Image

from captioning.data.images import ImageLoadError, load_image
from captioning.errors import CaptioningError

TINY_MODEL = tiny_model_config(cell="gru", max_len=5)


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for fmt, mode in [
        ("PNG", "RGB"),
        ("PNG", "RGBA"),
        ("PNG", "L"),
        ("PNG", "P"),
        ("JPEG", "RGB"),
        ("JPEG", "L"),
        ("JPEG", "CMYK"),
    ]:
        pixels = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert(mode)
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(0, 4)
    if kind == 0:  # flip random bytes
        for _ in range(int(rng.integers(1, 20))):
            buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
    elif kind == 1:  # truncate
        buf = buf[: int(rng.integers(0, len(buf)))]
    elif kind == 2:  # splice a random chunk
        at = int(rng.integers(0, len(buf)))
        buf[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    else:  # overwrite a header region
        at = int(rng.integers(0, min(64, len(buf))))
        buf[at : at + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    return bytes(buf)


def test_fuzzed_images_load_or_raise_our_error(tmp_path):
    """A few hundred mutated PNG/JPEG files: each loads as RGB or raises ImageLoadError."""
    rng = np.random.default_rng(1234)
    seeds = _seed_images()
    loaded = failed = 0
    for i in range(300):
        data = _mutate(seeds[i % len(seeds)], rng)
        path = tmp_path / f"f{i}.{'png' if i % len(seeds) < 4 else 'jpg'}"
        path.write_bytes(data)
        try:
            image = load_image(path)
        except ImageLoadError as exc:
            assert path.name in str(exc) and "\n" not in str(exc)
            failed += 1
        else:
            assert image.mode == "RGB" and min(image.size) > 0
            loaded += 1
    assert loaded > 0 and failed > 0  # the mutations exercise both outcomes


def write_bad_images(folder: Path) -> dict[str, Path]:
    """One file for each way an image can be unreadable."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "PNG")
    bad = {
        "text": folder / "notes.jpg",
        "truncated": folder / "cut.png",
        "empty": folder / "empty.png",
    }
    bad["text"].write_text("not an image at all")
    bad["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    bad["empty"].write_bytes(b"")
    return bad


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (a decompression bomb's first bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 12_000, 12_000)  # 144 M pixels, 432 MB as RGB
    with pytest.raises(ImageLoadError, match=r"bomb\.png.*exceeds max_pixels=100000000"):
        load_image(bomb)
    small = png_header_only(tmp_path / "small.png", 300, 200)
    with pytest.raises(ImageLoadError, match="60000 pixels exceeds max_pixels=50000"):
        load_image(small, max_pixels=50_000)


def test_max_pixels_is_the_one_size_rule_not_pillows(tmp_path, monkeypatch):
    """Pillow refuses images over twice its MAX_IMAGE_PIXELS with its own message; the project's
    max_pixels is the rule instead (None: no limit), and Pillow's setting is left as it was."""
    from PIL import Image as PILImage

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1_000)  # 100 x 100 is over twice that
    path = tmp_path / "plain.png"
    Image.new("RGB", (100, 100), (10, 200, 30)).save(path)
    assert load_image(path, max_pixels=None).size == (100, 100)
    assert load_image(path, max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageLoadError, match="10000 pixels exceeds max_pixels=5000"):
        load_image(path, max_pixels=5_000)
    assert PILImage.MAX_IMAGE_PIXELS == 1_000
    big = png_header_only(tmp_path / "big.png", 100_000, 100_000)  # 10 gigapixels
    with pytest.raises(ImageLoadError, match=r"big\.png.*exceeds max_pixels=100000000") as info:
        load_image(big)
    assert "decompression bomb" not in str(info.value)


def test_captioner_preprocesses_what_it_can_and_names_the_rest(tmp_path):
    from captioning.inference import Captioner

    captioner = Captioner.from_checkpoint(
        tiny_checkpoint(tmp_path / "ck.pt"), device="cpu", max_pixels=5000
    )
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    big = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(big)
    bad = write_bad_images(tmp_path / "bad")
    inputs = [good, bad["text"], Image.new("L", (8, 8)), big, bad["empty"]]
    ok, failed = captioner.preprocess_many(inputs)
    assert [k for k, _ in ok] == [0, 2] and all(t.shape == (3, 16, 16) for _, t in ok)
    assert [k for k, _ in failed] == [1, 3, 4]
    for (k, exc), problem in zip(failed, ["not a recognised", "max_pixels", "empty"], strict=True):
        assert (
            isinstance(exc, ImageLoadError) and str(inputs[k]) in str(exc) and problem in str(exc)
        )
    assert isinstance(captioner.caption([t for _, t in ok]), list)  # tensors go straight in


def test_caption_tool_captions_a_folder_past_its_bad_files(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "ck.pt")
    folder = tmp_path / "photos"
    good = []
    for k, (mode, suffix) in enumerate(
        [("RGB", ".jpg"), ("L", ".png"), ("RGBA", ".png"), ("P", ".gif"), ("RGB", ".png")]
    ):
        path = folder / f"g{k}{suffix}"
        path.parent.mkdir(exist_ok=True)
        Image.new(mode, (20 + k, 30)).save(path)
        good.append(path)
    Image.new("RGB", (500, 500)).save(folder / "huge.png")  # fine, but over --max-pixels below
    bad = sorted([*write_bad_images(folder).values(), folder / "huge.png"])
    (folder / "readme.txt").write_text("ignored: not an image suffix")

    out = run_tool(
        "caption.py", "--checkpoint", ckpt, "--batch-size", "2", "--max-pixels", "10000", folder
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    captioned = [line.split("\t")[0] for line in out.stdout.splitlines()]
    assert captioned == [str(p) for p in sorted(good)]  # every good image, in order
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad)  # one line per bad file, naming it
    assert sorted(next(str(p) for p in bad if str(p) in e) for e in errors) == [str(p) for p in bad]
    assert "4 of 9 files could not be read" in out.stderr

    skip = run_tool("caption.py", "--checkpoint", ckpt, "--skip-errors", folder)
    assert skip.returncode == 0 and len(skip.stdout.splitlines()) == len(good) + 1  # huge.png
    assert sum(line.startswith("error:") for line in skip.stderr.splitlines()) == len(bad) - 1


def _records_with_bad_files(shapes_root, tmp_path, n_bad: int):
    """The shapes val records, with the first `n_bad` images replaced by broken files."""

    from captioning.data.coco import load_coco_captions
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
    from captioning.data.datasets import CaptionDataset, ImageDataset
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


def test_training_skips_unreadable_images_counted_across_workers(shapes_root, tmp_path, caplog):
    from captioning.data.datasets import CaptionDataset
    from captioning.data.loader import build_train_loader, start_epoch
    from captioning.data.transforms import eval_transform
    from captioning.models.caption_model import build_model
    from captioning.training import TrainLoop
    from captioning.vocab import Vocabulary

    records = _records_with_bad_files(shapes_root, tmp_path, 3)
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, vocab_size=len(vocab))
    data = CaptionDataset(records, vocab, eval_transform(model.encoder.preprocess))
    loader = build_train_loader(data, batch_size=2, num_workers=2)  # (3 bad of 20: 2 batches hit)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start_epoch(loader, 1)
    with caplog.at_level("WARNING", logger="captioning.training.loop"):
        stats = TrainLoop(model, optimizer, device=torch.device("cpu"), max_bad_images=3).run_epoch(
            loader
        )
    assert stats.bad_images == 3 and stats.steps + stats.skipped == len(loader)
    named = [r.getMessage() for r in caplog.records if "unreadable training image" in r.message]
    assert len(named) == 3 and all(p.path.name in " ".join(named) for p in records[:3])
    start_epoch(loader, 2)
    with pytest.raises(
        CaptioningError, match=r"3 training images could not be read.*more than the 2"
    ):
        TrainLoop(model, optimizer, device=torch.device("cpu"), max_bad_images=2).run_epoch(loader)


def test_evaluation_leaves_unreadable_images_out_and_names_them(shapes_root, tmp_path, caplog):
    from captioning.decoding import DecodingSettings
    from captioning.evaluation import evaluate_split
    from captioning.inference import Captioner

    records = _records_with_bad_files(shapes_root, tmp_path, 2)
    captioner = Captioner.from_checkpoint(tiny_checkpoint(tmp_path / "ck.pt"), device="cpu")
    with caplog.at_level("WARNING", logger="captioning.evaluation"):
        evaluation = evaluate_split(
            captioner.model,
            captioner.vocab,
            records,
            device=torch.device("cpu"),
            decoding=DecodingSettings(max_len=5),
            batch_size=2,  # the 1st batch: all bad
        )
    scores, predictions = evaluation.scores, evaluation.predictions
    assert evaluation.unreadable == 2
    assert sorted(predictions) == sorted(r.image_id for r in records[2:])
    assert scores["num_images"] == len(records) - 2
    left_out = [r.getMessage() for r in caplog.records if "left out of evaluation" in r.message]
    assert [records[k].path.name in left_out[k] for k in range(2)] == [True, True]


def test_feature_cache_skips_unreadable_images(shapes_root, tmp_path):
    from captioning.data.features import FeatureCaptionDataset, build_feature_cache
    from captioning.data.loader import collate_captions
    from captioning.data.records import SkippedImage
    from captioning.data.transforms import eval_transform
    from captioning.models.encoder import vgg_tiny
    from captioning.vocab import Vocabulary

    records = _records_with_bad_files(shapes_root, tmp_path, 1)
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
