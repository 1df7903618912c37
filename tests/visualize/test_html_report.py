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


#: what a test run on the shapes data reports: official, NLTK and grounded scores
_TEST_SCORES = [
    *(f"Bleu_{n}" for n in range(1, 5)),
    *("METEOR", "ROUGE_L", "CIDEr", "SPICE"),
    *(f"nltk_Bleu_{n}" for n in range(1, 5)),
    *("objects_precision", "objects_recall", "objects_f1", "count_accuracy"),
    *("relation_accuracy", "CHAIR_i", "CHAIR_s", "num_images"),
]


def _report_browser(chromium: str, tmp_path: Path, width: int):
    import shutil

    import pytest

    pytest.importorskip("selenium", reason="the dev extra is not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver = shutil.which("chromedriver")
    if driver is None:  # Selenium would download one: not in a test
        pytest.skip("chromedriver not installed (apt-get install chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*chromium_flags(tmp_path / "chromium-profile"), f"--window-size={width},900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_html_report_fits_a_1280_px_window_and_rows_show_file_names(
    tmp_path: Path, chromium: str
) -> None:
    from selenium.webdriver.common.by import By

    items = _items(6)
    for k, item in enumerate(items):
        item.name = f"COCO_val2014_{item.image_id:012d}.jpg"
        item.references = [f"a long reference caption number {j} of image {k}" * 2 for j in (1, 2)]
    scores = {k: 0.123456 * (n + 1) for n, k in enumerate(_TEST_SCORES)}
    page = write_html_report(tmp_path / "report.html", items, scores=scores)
    browser = _report_browser(chromium, tmp_path, 1280)
    try:
        browser.get(page.resolve().as_uri())
        inner = browser.execute_script("return window.innerWidth")
        assert inner <= 1280
        widths = browser.execute_script(
            "var s = document.getElementById('summary');"
            "return [s.scrollWidth, s.clientWidth, document.documentElement.scrollWidth];"
        )
        assert widths[0] <= widths[1] <= inner and widths[2] <= inner  # nothing scrolls sideways
        names = browser.find_elements(By.CSS_SELECTOR, "#summary dt")
        assert [n.text for n in names] == _TEST_SCORES
        for name in names:  # each one on screen, CHAIR_i and CHAIR_s too
            box = browser.execute_script("return arguments[0].getBoundingClientRect()", name)
            assert name.is_displayed() and box["left"] >= 0 and box["right"] <= inner, name.text
        files = browser.find_elements(By.CSS_SELECTOR, "#captions tbody td.file")
        assert sorted(f.text for f in files) == sorted(item.name for item in items)
    finally:
        browser.quit()


def test_report_rows_are_named_by_file_and_by_id_without_one(tmp_path: Path) -> None:
    refs = {1: ["a cat"], 2: ["a dog"]}
    items = report_items(
        refs,
        {1: "cat", 2: "dog"},
        {},
        images={1: tmp_path / "photos" / "cat.jpg"},  # a path: its name; 2 has none
    )
    assert [i.name for i in items] == ["cat.jpg", ""]
    page = write_html_report(tmp_path / "r.html", items, scores={}).read_text()
    cells = re.findall(r'<td class="file" title="image id (\d+)">([^<]*)</td>', page)
    assert cells == [("1", "cat.jpg"), ("2", "id 2")]
    assert '<th data-key="file">file</th>' in page and ">id<" not in page
