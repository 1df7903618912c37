"""Karpathy split files (captioning.data.karpathy): COCO, Flickr8k, Flickr30k; malformed entries as
one-line errors.
"""

from __future__ import annotations

import json

import pytest
from helpers import compose_train, write_flickr, write_image, write_karpathy
from PIL import Image

from captioning.data.karpathy import load_karpathy
from captioning.data.splits import load_split
from captioning.errors import CaptioningError
from captioning.training.config import parse_config

# -- Flickr8k / Flickr30k ---------------------------------------------------------------------------


def test_flickr8k_reads_the_split_file_with_imgids_and_its_image_folder(tmp_path):
    write_flickr(tmp_path, {"train": 6, "val": 2, "test": 3})
    data = parse_config(compose_train("data=flickr8k", f"data.root={tmp_path}")).data
    assert (data.format, data.annotations, data.images) == (
        "karpathy",
        "dataset_flickr8k.json",
        "Flicker8k_Dataset",
    )
    splits = {split: load_split(data, split) for split in ("train", "val", "test")}
    assert {s: len(r) for s, r in splits.items()} == {"train": 6, "val": 2, "test": 3}  # the file's
    first = splits["val"][0]
    assert first.image_id == 6  # imgid
    assert first.path == tmp_path / "Flicker8k_Dataset" / f"{1000 + 37 * 6}_0006.jpg"
    assert first.captions[0] == "A dog number 6 runs in field 0 ."  # raw, stripped
    assert [r.image_id for r in splits["test"]] == [8, 9, 10]


def test_flickr30k_config_and_image_folder_settings(tmp_path, caplog):
    write_flickr(tmp_path, {"train": 3, "val": 1, "test": 1}, name="dataset_flickr30k.json",
                 folder="flickr30k-images")  # fmt: skip
    data = parse_config(compose_train("data=flickr30k", f"data.root={tmp_path}")).data
    assert data.images == "flickr30k-images" and len(load_split(data, "train")) == 3
    other = tmp_path / "other"
    write_flickr(other, {"train": 2, "val": 1, "test": 1}, name="dataset_flickr30k.json",
                 folder="Images")  # fmt: skip
    cfg = compose_train("data=flickr30k", f"data.root={other}", "data.images=Images")
    assert len(load_split(parse_config(cfg).data, "train")) == 2
    flat = tmp_path / "flat"  # the images directly in data.root: found there, with a warning
    write_flickr(flat, {"train": 2, "val": 1, "test": 1}, folder=None)
    data = parse_config(compose_train("data=flickr8k", f"data.root={flat}")).data
    with caplog.at_level("WARNING", logger="captioning.data.splits"):
        assert load_split(data, "val")[0].path == flat / f"{1000 + 37 * 2}_0002.jpg"
    assert "Flicker8k_Dataset not found" in caplog.text


def test_flickr_split_file_problems_are_one_line_errors_naming_imgids(tmp_path):
    path = write_flickr(tmp_path, {"train": 3, "val": 1, "test": 1})
    folder = tmp_path / "Flicker8k_Dataset"
    data = json.loads(path.read_text())
    data["images"][1]["sentences"] = [{"raw": " . "}, {"raw": ""}]
    path.write_text(json.dumps(data))
    with pytest.raises(CaptioningError, match=r"1 images without a caption, imgids \[1\]") as info:
        load_karpathy(path, folder, ["train"])
    assert "\n" not in str(info.value)
    assert [r.image_id for r in load_karpathy(path, folder, ["train"], strict=False)] == [0, 2]
    data["images"][1]["sentences"] = [{"raw": "A dog."}]
    path.write_text(json.dumps(data))
    (folder / data["images"][2]["filename"]).unlink()
    missing = r"1 of 4 image files listed in \S+ for splits train, val are missing.*image ids \[2\]"
    with pytest.raises(CaptioningError, match=missing):
        load_karpathy(path, folder, ["train", "val"])
    cfg = compose_train("data=flickr8k", f"data.root={tmp_path}")
    with pytest.raises(CaptioningError, match=r"missing.*fix data.root / data.images"):
        load_split(parse_config(cfg).data, "train")
    del data["images"][0]["imgid"]
    path.write_text(json.dumps(data))
    with pytest.raises(CaptioningError, match=r"positions \[0\] lack an integer imgid"):
        load_karpathy(path, folder, ["train"])
    with pytest.raises(CaptioningError, match=r"no split\(s\) \['restval'\]; it has"):
        load_karpathy(path, folder, ["restval"])


def test_a_split_file_is_parsed_once_for_all_its_splits(tmp_path, monkeypatch):
    from captioning.data import karpathy

    path = write_flickr(tmp_path, {"train": 2, "val": 1, "test": 1})
    parsed = []
    real = karpathy.json.loads
    monkeypatch.setattr(karpathy.json, "loads", lambda text: parsed.append(1) or real(text))
    karpathy._read_entries.cache_clear()
    for split in ("train", "val", "test"):
        load_karpathy(path, tmp_path / "Flicker8k_Dataset", [split])
    assert len(parsed) == 1
    data = json.loads(path.read_text())
    data["images"][0]["sentences"][0]["raw"] = "A changed caption, longer than before"
    path.write_text(json.dumps(data))  # a new file: read again
    assert load_karpathy(path, tmp_path / "Flicker8k_Dataset", ["train"])[0].captions[0] == (
        "A changed caption, longer than before"
    )


def test_tokens_lists_are_cut_only_where_they_are_json_lists_of_plain_strings(tmp_path):
    from captioning.data import karpathy

    entry = {
        "split": "train",
        "filename": "a.jpg",
        "imgid": 7,
        "sentences": [
            {"tokens": ["a", "b"], "raw": 'He said "tokens": ["x"], then left'},
            {"raw": "tokens last", "tokens": ["tokens", "last"]},
            {"tokens": ["we\\ird", 3], "raw": "odd tokens"},
        ],
    }
    write_image(tmp_path / "a.jpg")
    path = tmp_path / "dataset_mine.json"
    path.write_text(json.dumps({"images": [entry]}))
    (record,) = load_karpathy(path, tmp_path, ["train"])
    assert record.captions == ('He said "tokens": ["x"], then left', "tokens last", "odd tokens")
    path.write_text(json.dumps({"images": [entry]}, indent=2))  # other whitespace
    assert load_karpathy(path, tmp_path, ["train"]) == [record]
    assert karpathy._TOKENS.sub(b"", b'{"tokens": ["a", "b"], "raw": "x"}') == b'{"raw": "x"}'


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


compose_cfg = compose_train


# -- data: COCO 2014 layout and Karpathy's split file ---------------------------------------------


def test_karpathy_split_file_is_read_into_records(tmp_path):
    path = write_karpathy(tmp_path)
    train = load_karpathy(path, tmp_path, ["train", "restval"])
    assert [r.image_id for r in train] == [998, 999, 1000]  # cocoid, sorted
    assert train[0].path == tmp_path / "val2014" / "COCO_val2014_000000000002.jpg"
    assert train[2].captions == (
        "A photo number 0 of a red thing.",
        "a red thing 0",
    )  # raw, stripped
    assert [r.image_id for r in load_karpathy(path, tmp_path, ["test"])] == [995, 996]
    with pytest.raises(CaptioningError, match=r"no split.*'restvall'"):
        load_karpathy(path, tmp_path, ["restvall"])
    (tmp_path / "train2014" / "COCO_train2014_000000000001.jpg").unlink()
    with pytest.raises(CaptioningError, match="missing"):
        load_karpathy(path, tmp_path, ["train"])
    assert [r.image_id for r in load_karpathy(path, tmp_path, ["train"], strict=False)] == [1000]


def test_coco_karpathy_config_gives_the_paper_splits(tmp_path):
    write_karpathy(tmp_path)
    cfg = compose_cfg("data=coco_karpathy", f"data.root={tmp_path}")
    assert cfg.data.max_len == 16 and cfg.data.min_count == 5
    sizes = {split: len(load_split(cfg.data, split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 3, "val": 1, "test": 2}
