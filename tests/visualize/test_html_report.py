"""The HTML report (captioning.visualize.html_report)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
from helpers import chromium_flags, picture

from captioning.visualize import ReportItem, report_items, write_html_report

# --------------------------------------------------------------------------- HTML report


def _items(n: int, *, images: bool = True) -> list[ReportItem]:
    rng = np.random.default_rng(1)
    return [
        ReportItem(
            image_id=100 + k,
            caption=f"caption {k} <b>&</b>",
            references=[f"ref {k} one", "ref <two>"],
            scores={"CIDEr": float(rng.random() * 3), "Bleu_4": float(rng.random())},
            image=picture(seed=k) if images and k % 4 else None,
        )
        for k in range(n)
    ]


def _rows(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-image-id="(\d+)"', page)]


def test_html_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    items = _items(12)
    out = write_html_report(
        tmp_path / "r" / "report.html",
        items,
        title="Run <1>",
        scores={"CIDEr": 1.5, "Bleu_4": 0.25, "num_images": 12},
        notes=["METEOR skipped: java not found"],
    )
    page = out.read_text(encoding="utf-8")
    assert _rows(page) == [item.image_id for item in items]  # file order; the script sorts
    assert page.count('<img src="data:image/jpeg;base64,') == sum(1 for i in items if i.image)
    assert "<b>" not in page and "&lt;b&gt;&amp;&lt;/b&gt;" in page and "Run &lt;1&gt;" in page
    assert not re.search(r"(src|href)=\"(https?:|//)", page) and "<link" not in page
    assert "METEOR skipped" in page and "1.5000" in page and ">12<" in page
    assert 'data-default-sort="CIDEr"' in page


def test_html_report_without_images_has_no_thumbnail_column(tmp_path: Path) -> None:
    refs = {1: ["a cat"], 2: ["a dog"]}
    items = report_items(refs, {2: "dog", 1: "cat"}, {1: {"CIDEr": 0.5}, 2: {"CIDEr": 0.1}})
    assert [i.image_id for i in items] == [2, 1] and items[1].references == ["a cat"]
    page = write_html_report(tmp_path / "r.html", items, scores={}).read_text()
    assert "<img" not in page and "<th>image</th>" not in page and len(_rows(page)) == 2


def _dump_dom(chromium: str, page: Path, tmp_path: Path, fragment: str = "") -> str:
    cmd = [
        chromium,
        *chromium_flags(tmp_path / "chromium-profile"),
        "--dump-dom",
        page.resolve().as_uri() + fragment,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_html_report_renders_and_sorts_in_chromium(tmp_path: Path, chromium: str) -> None:
    items = _items(30)
    items[3].scores = {"Bleu_4": 0.5}  # no CIDEr: shown as n/a, sorted last
    page = write_html_report(tmp_path / "report.html", items, scores={"CIDEr": 1.0})
    dom = _dump_dom(chromium, page, tmp_path)
    assert 'data-sorted="CIDEr ascending"' in dom  # the script ran
    by_cider = sorted((i for i in items if "CIDEr" in i.scores), key=lambda i: i.scores["CIDEr"])
    assert _rows(dom) == [i.image_id for i in by_cider] + [items[3].image_id]  # worst first
    assert dom.count("<img") == sum(1 for i in items if i.image)
    dom = _dump_dom(chromium, page, tmp_path, "#sort=-Bleu_4")
    assert 'data-sorted="Bleu_4 descending"' in dom
    by_bleu = sorted(items, key=lambda i: -i.scores["Bleu_4"])
    assert _rows(dom) == [i.image_id for i in by_bleu]
