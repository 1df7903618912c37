"""Pre-extracted per-image features (captioning/data/regions.py): the layout's round trip in
float16 and float32, lazy reading, one line per bad file, skipping, and batching variable K."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_coco

from captioning.contracts import EncoderOutput
from captioning.data.config import data_config
from captioning.data.loader import build_eval_loader, collate_captions, stack_features
from captioning.data.records import ImageRecord, SkippedImage
from captioning.data.regions import (
    BOX_FEATURES,
    RegionCaptionDataset,
    RegionFeatures,
    feature_sizes,
    keep_with_features,
)
from captioning.data.splits import load_split
from captioning.errors import CaptioningError
from captioning.vocab import Vocabulary

D = 6


def write_layout(
    root: Path, counts: dict[int, int], *, dtype=np.float32, fc: bool = True, box: bool = False
) -> dict[str, Path]:
    """att/fc/box folders for images {id: K}; region k of image i holds i + k/10 everywhere."""
    dirs = {name: root / name for name in ("att", "fc", "box")}
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    for image_id, k in counts.items():
        att = (image_id + np.arange(k)[:, None] / 10 + np.zeros((k, D))).astype(dtype)
        np.savez_compressed(dirs["att"] / f"{image_id}.npz", feat=att)
        if fc:
            np.save(dirs["fc"] / f"{image_id}.npy", att.mean(0))
        if box:
            boxes = np.tile(np.array([[0, 0, 8, 4]], np.float32), (k, 1))
            np.save(dirs["box"] / f"{image_id}.npy", boxes)
    return dirs


def records(ids, folder: Path | None = None) -> list[ImageRecord]:
    return [ImageRecord(i, (folder or Path("x")) / f"{i}.png", ("a red circle",)) for i in ids]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_layout_round_trip_in_float16_and_float32(tmp_path: Path, dtype) -> None:
    dirs = write_layout(tmp_path, {7: 3, 8: 1}, dtype=dtype)
    reader = RegionFeatures(dirs["att"], dirs["fc"], vector_dim=D, grid_dim=D)
    out = reader.read(7)
    assert out.grid.dtype == torch.float32 and out.grid.shape == (3, D)
    expected = 7 + np.arange(3)[:, None] / 10 + np.zeros((3, D))
    np.testing.assert_allclose(out.grid.numpy(), expected, rtol=1e-3)
    np.testing.assert_allclose(out.vector.numpy(), expected.mean(0), rtol=1e-3)
    assert reader.read(8).grid.shape == (1, D)


def test_without_fc_dir_the_vector_is_the_mean_of_the_regions(tmp_path: Path) -> None:
    dirs = write_layout(tmp_path, {3: 4}, fc=False)
    out = RegionFeatures(dirs["att"]).read(3)
    torch.testing.assert_close(out.vector, out.grid.mean(0))


def test_box_features_are_the_references_five_scaled_by_the_image_size(tmp_path: Path) -> None:
    from PIL import Image

    dirs = write_layout(tmp_path, {5: 2}, box=True)
    Image.new("RGB", (16, 8)).save(tmp_path / "5.png")
    reader = RegionFeatures(dirs["att"], dirs["fc"], dirs["box"])
    out = reader.read(5, records([5], tmp_path)[0])
    assert out.grid.shape == (2, D + BOX_FEATURES)
    # box (0, 0, 8, 4) in a 16 x 8 image: x1/w, y1/h, x2/w, y2/h, area/(w h)
    torch.testing.assert_close(out.grid[0, D:], torch.tensor([0.0, 0.0, 0.5, 0.5, 0.25]))


def test_files_are_opened_only_when_their_item_is_read(tmp_path: Path, monkeypatch) -> None:
    dirs = write_layout(tmp_path, {1: 2, 2: 3, 3: 1})
    opened: list[tuple[str, object]] = []
    real_load = np.load

    def spy(path, *args, **kwargs):
        opened.append((Path(path).name + "@" + Path(path).parent.name, kwargs.get("mmap_mode")))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    vocab = Vocabulary.from_counts({"a": 1, "red": 1, "circle": 1})
    reader = RegionFeatures(dirs["att"], dirs["fc"])
    dataset = RegionCaptionDataset(reader, records([1, 2, 3]), vocab)
    assert opened == []  # building the dataset reads no feature file
    features, captions, image_id = dataset[1]
    assert image_id == 2 and features.grid.shape == (3, D) and len(captions) == 1
    # only image 2's files; the .npy memory-mapped, the .npz (a zip) read whole
    assert sorted(opened, key=str) == [("2.npy@fc", "r"), ("2.npz@att", None)]


def _bad(tmp_path: Path, case: str) -> tuple[RegionFeatures, Path]:
    dirs = write_layout(tmp_path, {1: 2, 2: 2})
    reader = RegionFeatures(dirs["att"], dirs["fc"], vector_dim=D, grid_dim=D)
    att, fc = dirs["att"] / "2.npz", dirs["fc"] / "2.npy"
    if case == "truncated npz":
        att.write_bytes(att.read_bytes()[:40])
        return reader, att
    if case == "truncated npy":
        fc.write_bytes(fc.read_bytes()[:90])
        return reader, fc
    if case == "truncated npy data":
        fc.write_bytes(fc.read_bytes()[:-4])  # header whole, the last float cut
        return reader, fc
    if case == "fc of another size":
        np.save(fc, np.zeros(D + 1, np.float32))
        return reader, fc
    if case == "regions of another size":
        np.savez(att, feat=np.zeros((2, D + 2), np.float32))
        return reader, att
    if case == "one-dimensional regions":
        np.savez(att, feat=np.zeros(D, np.float32))
        return reader, att
    if case == "no feat key":
        np.savez(att, other=np.zeros((2, D), np.float32))
        return reader, att
    if case == "integers":
        np.savez(att, feat=np.zeros((2, D), np.int64))
        return reader, att
    if case == "missing":
        fc.unlink()
        return reader, fc
    raise AssertionError(case)


BAD = [
    "truncated npz",
    "truncated npy",
    "truncated npy data",
    "fc of another size",
    "regions of another size",
    "one-dimensional regions",
    "no feat key",
    "integers",
    "missing",
]


@pytest.mark.parametrize("case", BAD)
def test_each_bad_file_is_one_line_naming_it_and_its_item_is_skipped(
    tmp_path: Path, case: str
) -> None:
    reader, path = _bad(tmp_path, case)
    with pytest.raises(CaptioningError) as err:
        reader.read(2)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path)), message
    item = reader.item(records([2])[0])
    assert isinstance(item, SkippedImage) and item.reason == message
    assert isinstance(reader.item(records([1])[0]), EncoderOutput)  # the good one still reads


def test_bad_items_are_counted_in_the_batch_like_unreadable_images(tmp_path: Path) -> None:
    reader, path = _bad(tmp_path, "truncated npz")
    vocab = Vocabulary.from_counts({"a": 1, "red": 1, "circle": 1})
    dataset = RegionCaptionDataset(reader, records([1, 2]), vocab)
    batch = collate_captions([dataset[0], dataset[1]])
    assert [s.image_id for s in batch.skipped] == [2] and str(path) in batch.skipped[0].reason
    assert batch.features.grid.shape == (1, 2, D) and batch.captions.shape[0] == 1


def test_images_with_captions_but_no_features_are_an_error_or_skipped(
    tmp_path: Path, caplog
) -> None:
    dirs = write_layout(tmp_path, {1: 2, 2: 2})
    reader = RegionFeatures(dirs["att"], dirs["fc"])
    with pytest.raises(CaptioningError, match=r"1 images of split 'train' have captions but no "):
        keep_with_features(records([1, 2, 3]), reader, strict=True, split="train")
    with pytest.raises(CaptioningError, match=str(dirs["att"] / "3.npz")):
        keep_with_features(records([1, 2, 3]), reader, strict=True)
    kept = keep_with_features(records([1, 2, 3]), reader, strict=False)
    assert [r.image_id for r in kept] == [1, 2] and "skipped" in caplog.text


def test_a_coco_split_reads_features_without_its_image_files(tmp_path: Path) -> None:
    write_coco(tmp_path, "train", {"a.jpg": ["a red circle"], "b.jpg": ["a blue square"]})
    ids = [r.image_id for r in load_split(_coco_config(tmp_path, None), "train")]
    for f in (tmp_path / "images").glob("*.jpg"):  # the images are not needed any more
        f.unlink()
    dirs = write_layout(tmp_path / "feats", {ids[0]: 2})
    config = _coco_config(tmp_path, dirs, strict=True)
    with pytest.raises(CaptioningError, match="have captions but no features"):
        load_split(config, "train")
    kept = load_split(_coco_config(tmp_path, dirs, strict=False), "train")
    assert [r.image_id for r in kept] == [ids[0]]


def _coco_config(root: Path, dirs: dict | None, strict: bool = True):
    features = {"att_dir": None, "fc_dir": None, "box_dir": None, "extract": None}
    if dirs is not None:
        features.update(att_dir=str(dirs["att"]), fc_dir=str(dirs["fc"]))
    split = {"annotations": "annotations/captions_train.json", "images": "images"}
    return data_config(
        {"root": str(root), "splits": {"train": split}, "strict": strict, "features": features},
        legacy=True,
    )


def test_feature_sizes_come_from_the_first_file_with_box_features_counted(tmp_path) -> None:
    dirs = write_layout(tmp_path, {4: 3}, box=True)
    features = {"att_dir": str(dirs["att"]), "fc_dir": None, "box_dir": None, "extract": None}
    config = data_config({"root": str(tmp_path), "splits": {}, "features": features}, legacy=True)
    assert feature_sizes(config) == (D, D)
    boxed = {**features, "box_dir": str(dirs["box"])}
    config = data_config({"root": str(tmp_path), "splits": {}, "features": boxed}, legacy=True)
    assert feature_sizes(config) == (D, D + BOX_FEATURES)


def test_collate_pads_variable_regions_and_masks_them_including_k_1() -> None:
    rows = [
        EncoderOutput(torch.full((4,), float(i)), torch.ones(k, 5) * (i + 1))
        for i, k in enumerate([3, 1, 2])
    ]
    batch = stack_features(rows)
    assert batch.grid.shape == (3, 3, 5) and batch.vector.shape == (3, 4)
    assert batch.mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    assert batch.mask.dtype == torch.bool
    assert (batch.grid[~batch.mask] == 0).all()  # padding is zeros
    assert (batch.grid[1, 0] == 2).all() and (batch.grid[2, :2] == 3).all()


def test_collate_of_equal_region_counts_has_no_mask() -> None:
    rows = [EncoderOutput(torch.zeros(4), torch.ones(2, 5)) for _ in range(3)]
    assert stack_features(rows).mask is None


def test_the_evaluation_loader_yields_padded_features_and_masks(tmp_path: Path) -> None:
    dirs = write_layout(tmp_path, {1: 1, 2: 3, 3: 2})
    reader = RegionFeatures(dirs["att"], dirs["fc"])
    loader = build_eval_loader(records([1, 2, 3]), transform=None, batch_size=3, features=reader)
    batch = next(iter(loader))
    assert batch.image_ids.tolist() == [1, 2, 3] and batch.images.numel() == 0
    assert batch.features.grid.shape == (3, 3, D)
    assert batch.features.mask.sum(1).tolist() == [1, 3, 2]
