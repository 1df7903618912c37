"""Splitting a folder data set by fractions (seeded, disjoint)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import compose_train, write_image

from captioning.data.folder import split_by_fraction
from captioning.data.splits import load_split
from captioning.errors import CaptioningError
from captioning.training.config import parse_config


def write_rows(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def folder_data(root: Path, *overrides: str):
    cfg = compose_train("data=folder", f"data.root={root}", *overrides)
    return parse_config(cfg).data


def test_fraction_split_is_seeded_reproducible_and_disjoint(tmp_path):
    lines = [json.dumps({"image": f"img{k:02d}.png", "caption": f"picture {k}"}) for k in range(40)]
    for k in range(40):
        write_image(tmp_path / f"img{k:02d}.png", k)
    write_rows(tmp_path / "captions.jsonl", lines)
    data = folder_data(tmp_path, "data.val_fraction=0.2", "data.test_fraction=0.1")
    splits = {s: [r.image_id for r in load_split(data, s)] for s in ("train", "val", "test")}
    assert {s: len(ids) for s, ids in splits.items()} == {"train": 28, "val": 8, "test": 4}
    assert sorted(i for ids in splits.values() for i in ids) == list(range(1, 41))  # disjoint
    again = {s: [r.image_id for r in load_split(data, s)] for s in ("train", "val", "test")}
    assert again == splits
    other = folder_data(tmp_path, "data.val_fraction=0.2", "data.test_fraction=0.1", "data.seed=1")
    assert [r.image_id for r in load_split(other, "val")] != splits["val"]
    assert split_by_fraction(5, 0.1, 0.1, 0).count("train") == 3  # at least one image each
    labels = split_by_fraction(1000, 0.1, 0.05, 3)
    assert labels == split_by_fraction(1000, 0.1, 0.05, 3)
    assert np.unique(labels, return_counts=True)[1].tolist() == [50, 850, 100]


def test_fractions_out_of_range_are_config_errors(tmp_path):
    with pytest.raises(CaptioningError, match=r"data.val_fraction=1.5: must be <= 1.0"):
        folder_data(tmp_path, "data.val_fraction=1.5")
    with pytest.raises(CaptioningError, match=r"data.test_fraction=-0.1: must be >= 0.0"):
        folder_data(tmp_path, "data.test_fraction=-0.1")
