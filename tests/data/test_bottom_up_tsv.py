"""The bottom-up TSV converter (captioning/data/bottom_up_tsv.py, tools/convert_bottom_up_tsv.py)
on a small TSV written here in the release's exact format."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, run_tool

from captioning.data.bottom_up_tsv import convert_bottom_up_tsv, read_bottom_up_tsv
from captioning.data.regions import RegionFeatures
from captioning.errors import CaptioningError


def b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.float32)).decode("ascii")


def release_row(
    image_id: int, k: int, d: int = 8, seed: int = 0
) -> tuple[str, np.ndarray, np.ndarray]:
    """One line as the release writes it (tools/generate_tsv.py: tab-separated, no header)."""
    rng = np.random.default_rng(seed)
    boxes = rng.uniform(0, 100, (k, 4)).astype(np.float32)
    feats = rng.uniform(0, 1, (k, d)).astype(np.float32)
    line = "\t".join([str(image_id), "640", "480", str(k), b64(boxes), b64(feats)])
    return line, boxes, feats


def write_tsv(path: Path, rows: list[str]) -> Path:
    path.write_text("".join(f"{r}\r\n" for r in rows), encoding="ascii")  # csv's line ends
    return path


def test_rows_are_converted_as_make_bu_data_does(tmp_path: Path) -> None:
    lines = [release_row(i, k, seed=i) for i, k in ((9, 3), (10, 1), (11, 36))]
    tsv = write_tsv(tmp_path / "a.tsv", [line for line, _, _ in lines])
    out = {n: tmp_path / f"cocobu_{n}" for n in ("att", "fc", "box")}
    assert convert_bottom_up_tsv([tsv], out["att"], out["fc"], out["box"], progress=False) == 3
    for image_id, (_, boxes, feats) in zip((9, 10, 11), lines, strict=True):
        with np.load(out["att"] / f"{image_id}.npz") as z:
            assert z.files == ["feat"] and z["feat"].dtype == np.float32
            np.testing.assert_array_equal(z["feat"], feats)
        np.testing.assert_allclose(np.load(out["fc"] / f"{image_id}.npy"), feats.mean(0))
        np.testing.assert_array_equal(np.load(out["box"] / f"{image_id}.npy"), boxes)
    read = RegionFeatures(out["att"], out["fc"]).read(11)  # what training reads
    assert read.grid.shape == (36, 8) and read.vector.shape == (8,)
    assert not list(out["att"].glob(".*"))  # no temporary file left


def test_float16_output_halves_the_features(tmp_path: Path) -> None:
    line, _, feats = release_row(1, 2)
    tsv = write_tsv(tmp_path / "a.tsv", [line])
    convert_bottom_up_tsv([tsv], tmp_path / "att", tmp_path / "fc", dtype="float16", progress=False)
    with np.load(tmp_path / "att" / "1.npz") as z:
        assert z["feat"].dtype == np.float16
        np.testing.assert_allclose(z["feat"], feats, rtol=1e-3)


def test_rows_are_streamed_one_at_a_time(tmp_path: Path) -> None:
    good, _, _ = release_row(1, 2)
    tsv = write_tsv(tmp_path / "a.tsv", [good, "2\t640\t480\t2\tAAAA"])
    rows = read_bottom_up_tsv(tsv)
    assert next(rows).image_id == 1  # the broken second line is not read yet
    with pytest.raises(CaptioningError, match=r"a.tsv, line 2: 5 columns, expected 6"):
        next(rows)


@pytest.mark.parametrize(
    ("broken", "needle"),
    [
        (lambda f: [*f[:3], "5", *f[4:]], "not a multiple of num_boxes=5"),
        (lambda f: [*f[:4], "***", *f[5:]], "boxes is not base64 float32"),
        (lambda f: ["x", *f[1:]], "must be integers"),
        (lambda f: [*f[:5], b64(np.zeros((3, 4)))], "4 numbers per region, the rows before had 8"),
    ],
)
def test_a_broken_row_is_one_line_naming_file_and_line(tmp_path: Path, broken, needle) -> None:
    good, _, _ = release_row(1, 3)
    bad = "\t".join(broken(good.split("\t")))
    tsv = write_tsv(tmp_path / "a.tsv", [good, bad])
    with pytest.raises(CaptioningError, match=r"a.tsv, line 2") as err:
        convert_bottom_up_tsv([tsv], tmp_path / "att", progress=False)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_tool_converts_and_reports_errors_in_one_line(tmp_path: Path) -> None:
    line, _, feats = release_row(4, 2)
    tsv = write_tsv(tmp_path / "a.tsv", [line])
    done = run_tool("convert_bottom_up_tsv.py", tsv, "--out", tmp_path / "bu", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "1 images" in done.stdout
    with np.load(tmp_path / "bu_att" / "4.npz") as z:
        np.testing.assert_array_equal(z["feat"], feats)
    assert (tmp_path / "bu_fc" / "4.npy").is_file() and (tmp_path / "bu_box" / "4.npy").is_file()
    missing = run_tool("convert_bottom_up_tsv.py", tmp_path / "nope.tsv", "--out", tmp_path / "x")
    assert_one_line_error(missing, "no such TSV file")
