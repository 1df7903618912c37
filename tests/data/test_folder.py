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
            r"1 of 2 image files listed in \S*captions.csv for split val are missing, "
            r"e.g. \[.*gone.png'\] \(first rows at "
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


# -- rows are never glued or split --------------------------------------------------------------


def test_folder_csv_quoted_caption_spanning_lines_is_one_row(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(tmp_path / name)
    (tmp_path / "captions.csv").write_bytes(
        b'image,caption,split\r\na.jpg,"A dog\non grass",train\r\n'
        b'b.jpg,"A cat\r\nasleep",train\r\nc.jpg,"two\nlines"\r\n'
    )
    with pytest.raises(CaptioningError, match=r"lines \[6\] are not rows") as info:
        load_split(folder_data(tmp_path), "train")  # a short row, starting on line 6
    assert "\n" not in str(info.value)
    (tmp_path / "captions.csv").write_bytes(
        b'image,caption,split\r\na.jpg,"A dog\non grass",train\r\n'
        b'b.jpg,"A cat\r\nasleep",train\r\nc.jpg,A bird,val\r\n'
    )
    train = load_split(folder_data(tmp_path), "train")
    assert [r.captions for r in train] == [("A dog\non grass",), ("A cat\r\nasleep",)]
    assert [r.captions for r in load_split(folder_data(tmp_path), "val")] == [("A bird",)]


@pytest.mark.parametrize("brk", ["\u2028", "\u0085", "\x0c", "\x1c", "\u2029", "\x0b"])
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_folder_line_separators_inside_a_caption_stay_in_it(tmp_path, brk, suffix):
    write_image(tmp_path / "a.jpg")
    write_image(tmp_path / "b.jpg")
    caption = f"a dog{brk}on grass"
    if suffix == ".jsonl":
        lines = [json.dumps({"image": f"{n}.jpg", "caption": caption}, ensure_ascii=False)
                 for n in "ab"]  # fmt: skip
    else:
        sep = "\t" if suffix == ".tsv" else ","
        lines = [f"image{sep}caption", f"a.jpg{sep}{caption}", f"b.jpg{sep}{caption}"]
    write_rows(tmp_path / f"captions{suffix}", lines)
    data = folder_data(tmp_path, "data.val_fraction=0", "data.test_fraction=0")
    assert [r.captions for r in load_split(data, "train")] == [(caption,), (caption,)]


def test_folder_duplicate_rows_count_once_and_are_reported(tmp_path, caplog):
    write_image(tmp_path / "a.jpg")
    write_image(tmp_path / "b.jpg")
    write_rows(
        tmp_path / "captions.csv",
        [
            "image,caption,split",
            "a.jpg,A dog.,train",
            "./a.jpg,A dog.,train",  # the same image and caption: counted once
            "a.jpg,A dog on grass.,train",
            "b.jpg,A dog.,train",  # another image: kept
            "a.jpg, A dog. ,train",  # the same caption once stripped
        ],
    )
    with caplog.at_level("WARNING"):
        train = load_split(folder_data(tmp_path), "train")
    assert [r.captions for r in train] == [("A dog.", "A dog on grass."), ("A dog.",)]
    assert "counted once 2 rows repeating an earlier row's image and caption" in caplog.text
    assert "at lines [3, 6]" in caplog.text
    (tmp_path / "captions.csv").unlink()
    lines = [json.dumps({"image": "a.jpg", "captions": ["x y", "x y"]})]
    write_rows(tmp_path / "c.jsonl", [*lines, json.dumps({"image": "b.jpg", "caption": "x y"})])
    caplog.clear()
    data = folder_data(tmp_path, "data.val_fraction=0", "data.test_fraction=0")
    with caplog.at_level("WARNING"):
        records = load_split(data, "train")
    assert [r.captions for r in records] == [("x y",), ("x y",)]
    assert "counted once 1 rows" in caplog.text and "at lines [1]" in caplog.text
