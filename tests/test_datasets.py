"""The data sets people start with, each read from small files written here: Flickr8k / Flickr30k
(Karpathy's split files, no cocoid, no filepath), COCO 2017's official files, and a user's own CSV /
JSON Lines file; their configs, ids and splits, and their errors as one line naming rows or ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import compose_train
from PIL import Image

from captioning.data.coco import write_coco_captions
from captioning.data.folder import split_by_fraction
from captioning.data.karpathy import load_karpathy
from captioning.data.splits import load_split
from captioning.errors import CaptioningError
from captioning.evaluation import load_references
from captioning.training.config import parse_config

# -- writers --------------------------------------------------------------------------------------


def write_image(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (shade % 256, 40, 90)).save(path)


def write_flickr(
    root: Path,
    sizes: dict[str, int],
    *,
    name: str = "dataset_flickr8k.json",
    folder: str | None = "Flicker8k_Dataset",
    images: bool = True,
) -> Path:
    """A Flickr-style Karpathy split file (imgid, filename, sentences; no cocoid, no filepath)
    and its images under `root/folder` (None: in `root`)."""
    entries, k, sentid = [], 0, 0
    for split, count in sizes.items():
        for _ in range(count):
            filename = f"{1000 + 37 * k}_{k:04x}.jpg"
            if images:
                write_image(root / (folder or "") / filename, k)
            sentences = []
            for j in range(5):
                raw = f"A dog number {k} runs in field {j} . "
                sentences.append(
                    {"tokens": raw.lower().split()[:-1], "raw": raw, "imgid": k, "sentid": sentid}
                )
                sentid += 1
            entries.append(
                {
                    "sentids": [s["sentid"] for s in sentences],
                    "imgid": k,
                    "sentences": sentences,
                    "split": split,
                    "filename": filename,
                }
            )
            k += 1
    path = root / name
    path.write_text(json.dumps({"images": entries, "dataset": name[8:-5]}))
    return path


def write_rows(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def folder_data(root: Path, *overrides: str):
    cfg = compose_train("data=folder", f"data.root={root}", *overrides)
    return parse_config(cfg).data


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
    with pytest.raises(CaptioningError, match=r"1 of 4 image files .* missing.*image ids \[2\]"):
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


# -- COCO 2017 ------------------------------------------------------------------------------------


def test_coco2017_reads_the_2017_files(tmp_path):
    for split, start in (("train", 9), ("val", 139)):
        images, anns = [], []
        for k in range(3 if split == "train" else 2):
            name = f"{start + k:012d}.jpg"
            write_image(tmp_path / f"{split}2017" / name, k)
            images.append({"id": start + k, "file_name": name, "height": 10, "width": 12})
            anns.append({"id": 100 * start + k, "image_id": start + k, "caption": f"a cat {k}"})
        path = tmp_path / "annotations" / f"captions_{split}2017.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"images": images, "annotations": anns}))
    data = parse_config(compose_train("data=coco2017", f"data.root={tmp_path}")).data
    assert [r.image_id for r in load_split(data, "train")] == [9, 10, 11]
    assert [r.image_id for r in load_split(data, "test")] == [139, 140]  # val doubles as test
    assert load_split(data, "val")[0].path == tmp_path / "val2017" / "000000000139.jpg"


# -- a user's own CSV / JSON Lines ----------------------------------------------------------------


def test_folder_csv_with_a_split_column(tmp_path):
    for name in ("a.jpg", "sub/b.jpg", "c.jpg", "d.jpg"):
        write_image(tmp_path / "pics" / name)
    write_rows(
        tmp_path / "captions.csv",
        [
            "Image , Caption,split,photographer",  # any case and spacing, extra columns ignored
            "pics/a.jpg,A dog on grass.,train,me",
            'pics/sub/b.jpg,"A cat, asleep on a mat.",train,me',
            "./pics/a.jpg,a brown dog,train,you",  # the same image as pics/a.jpg
            "",
            "pics/c.jpg,Two birds.,val,me",
            "pics/d.jpg,A red car.,test,me",
        ],
    )
    data = folder_data(tmp_path)
    train = load_split(data, "train")
    assert [r.image_id for r in train] == [1, 2]  # in order of first appearance
    assert train[0].path == tmp_path / "pics" / "a.jpg"
    assert train[0].captions == ("A dog on grass.", "a brown dog")
    assert train[1].captions == ("A cat, asleep on a mat.",)
    assert [(r.image_id, r.captions) for r in load_split(data, "val")] == [(3, ("Two birds.",))]
    assert [r.image_id for r in load_split(data, "test")] == [4]


def test_folder_csv_commas_tsv_and_the_image_folder_setting(tmp_path):
    write_image(tmp_path / "Images" / "x.jpg")
    write_image(tmp_path / "Images" / "y.jpg")
    write_rows(
        tmp_path / "captions.txt",  # Kaggle's Flickr8k: image,caption with unquoted commas
        ["image,caption", "x.jpg,A man, a dog, and a ball .", "y.jpg,Just a tree", "x.jpg,ok"],
    )
    data = folder_data(
        tmp_path,
        "data.annotations=captions.txt",
        "data.images=Images",
        "data.val_fraction=0.5",
        "data.test_fraction=0.0",
    )
    records = {r.image_id: r for s in ("train", "val") for r in load_split(data, s)}
    assert records[1].captions == ("A man, a dog, and a ball .", "ok")
    assert records[2].path == tmp_path / "Images" / "y.jpg"
    tsv = tmp_path / "tsv"
    write_image(tsv / "z.png")
    write_rows(tsv / "caps.tsv", ["caption\timage\tsplit", "a, b\tz.png\ttrain"])
    (record,) = load_split(folder_data(tsv), "train")
    assert record.captions == ("a, b",) and record.path == tsv / "z.png"


def test_folder_jsonl_with_captions_lists_and_splits(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        write_image(tmp_path / name)
    write_rows(
        tmp_path / "data.jsonl",
        [
            json.dumps({"image": "a.png", "captions": ["one", "two"], "split": "train"}),
            json.dumps({"image": "b.png", "caption": "three", "split": "dev", "extra": 1}),
            "",
            json.dumps({"image": "c.png", "caption": "four", "split": "test"}),
        ],
    )
    data = folder_data(tmp_path, "data.splits.val=[dev]")  # the file says dev
    assert [(r.image_id, r.captions) for r in load_split(data, "train")] == [(1, ("one", "two"))]
    assert [r.image_id for r in load_split(data, "val")] == [2]


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


def test_folder_finds_its_one_captions_file(tmp_path):
    with pytest.raises(CaptioningError, match=r"holds none; name it with data\.annotations"):
        load_split(folder_data(tmp_path), "train")
    write_rows(tmp_path / "a.csv", ["image,caption"])
    write_rows(tmp_path / "b.jsonl", [])
    with pytest.raises(CaptioningError, match=r"holds several: \['a.csv', 'b.jsonl'\]"):
        load_split(folder_data(tmp_path), "train")
    with pytest.raises(CaptioningError, match=r"captions file not found: .*nope.csv"):
        load_split(folder_data(tmp_path, "data.annotations=nope.csv"), "train")


CSV_HEADER = "image,caption,split"


@pytest.mark.parametrize(
    "lines, overrides, message",
    [
        (["img,text", "a.png,a dog"], (), r"header naming the columns image and caption.*\['img'"),
        (["a.png,a dog", "b.png,a cat"], (), r"header naming the columns image and caption"),
        ([CSV_HEADER, "a.png,a dog,train", "b.png,a cat"], (), r"lines \[3\] are not rows"),
        ([CSV_HEADER, "a.png,a dog,train", ",a cat,train"], (), r"lines \[3\] have no image path"),
        (
            [CSV_HEADER, "a.png,a dog,train", "a.png, ?! ,train", "b.png,...,val", "c.png,x,test"],
            (),
            r"2 captions without a word, at lines \[3, 4\]",
        ),
        (
            [CSV_HEADER, "a.png,a dog,train", "b.png,cat,dev", "c.png,x,Test", "d.png,y,val"],
            (),
            r"lines \[3, 4\] name splits \['Test', 'dev'\] that data.splits does not list",
        ),
        (
            [CSV_HEADER, "a.png,a dog,train", "a.png,the dog,val", "b.png,x,val"],
            (),
            r"lines \[3\] give their image a split other than its first row's",
        ),
        (
            ["image,caption", "a.png,a dog", "b.png,a cat", "c.png,a cow"],
            ("data.val_fraction=0.6", "data.test_fraction=0.5"),
            r"data.val_fraction=0.6 and data.test_fraction=0.5 must be in \[0, 1\) and add up",
        ),
        (
            ["image,caption", "a.png,a dog", "b.png,a cat"],
            ("data.val_fraction=0.3", "data.test_fraction=0.3"),
            r"2 images are too few for data.val_fraction=0.3",
        ),
        (
            [CSV_HEADER, "a.png,a dog,train", "b.png,a cat,test"],
            (),
            r"gives no usable image in split\(s\) \['val'\] \(its split column",
        ),
        (
            [CSV_HEADER, "a.png,a dog,train", "b.png,a cat,val", "gone.png,x,val", "c.png,x,test"],
            (),
            r"1 of 2 image files listed in .* are missing, e.g. \[.*gone.png'\] \(first rows at "
            r"lines \[4\]\).*relative to",
        ),
    ],
)
def test_folder_file_problems_are_one_line_errors_naming_lines(tmp_path, lines, overrides, message):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        write_image(tmp_path / name)
    write_rows(tmp_path / "captions.csv", lines)
    with pytest.raises(CaptioningError, match=message) as info:
        load_split(folder_data(tmp_path, *overrides), "val")
    assert "\n" not in str(info.value)


def test_folder_jsonl_problems_and_lenient_mode(tmp_path, caplog):
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name)
    good = [json.dumps({"image": f"{n}.png", "caption": "a thing", "split": "train"}) for n in "ab"]
    write_rows(
        tmp_path / "c.jsonl",
        [*good, "{not json", json.dumps(["a.png"]), json.dumps({"image": "a.png", "caption": 3})],
    )
    with pytest.raises(CaptioningError, match=r"lines \[3, 4, 5\] are not JSON objects"):
        load_split(folder_data(tmp_path), "train")
    write_rows(
        tmp_path / "c.jsonl",
        [
            *good,
            json.dumps({"image": "gone.png", "caption": "x", "split": "train"}),
            json.dumps({"image": "b.png", "caption": "...", "split": "train"}),
        ],
    )
    with pytest.raises(CaptioningError, match=r"1 captions without a word, at lines \[4\]"):
        load_split(folder_data(tmp_path), "train")
    with caplog.at_level("WARNING"):
        records = load_split(folder_data(tmp_path, "data.strict=false"), "train")
    assert [(r.image_id, r.captions) for r in records] == [(1, ("a thing",)), (2, ("a thing",))]
    assert "skipped 1 captions without a word, at lines [4]" in caplog.text
    assert "gone.png" in caplog.text


def test_fractions_out_of_range_are_config_errors(tmp_path):
    with pytest.raises(CaptioningError, match=r"data.val_fraction=1.5: must be <= 1.0"):
        folder_data(tmp_path, "data.val_fraction=1.5")
    with pytest.raises(CaptioningError, match=r"data.test_fraction=-0.1: must be >= 0.0"):
        folder_data(tmp_path, "data.test_fraction=-0.1")


# -- references for results mode ------------------------------------------------------------------


def test_any_split_becomes_a_coco_references_file(tmp_path):
    write_flickr(tmp_path, {"train": 2, "val": 1, "test": 2})
    data = parse_config(compose_train("data=flickr8k", f"data.root={tmp_path}")).data
    records = load_split(data, "test")
    path = write_coco_captions(records, tmp_path / "refs.json", image_dir=tmp_path)
    assert load_references(path) == {r.image_id: list(r.captions) for r in records}
    images = json.loads(path.read_text())["images"]
    assert images[0] == {"id": 3, "file_name": f"Flicker8k_Dataset/{1000 + 37 * 3}_0003.jpg"}
