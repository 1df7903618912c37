"""A folder of images with a captions file (captioning.data.folder): CSV, TSV, JSONL, split columns
and lenient mode.
"""

from __future__ import annotations

import json

import pytest
from helpers import folder_data, write_image, write_rows

from captioning.data.splits import load_split
from captioning.errors import CaptioningError

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
