"""The web demo's page (captioning.app.page): errors under the uploaded name, memory over many
requests, and the page in a real browser (headless Chromium, Selenium).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import ROOT, TOOLS, chromium_flags
from PIL import Image

from captioning.app import DemoService, decode_requests, shapes_examples
from captioning.inference import Captioner
from captioning.visualize import attention_steps

# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def captioner(files: dict[str, Path]) -> Captioner:
    return Captioner.from_checkpoint(files["attention"], device="cpu", max_pixels=100_000)


@pytest.fixture(scope="module")
def service(captioner: Captioner) -> DemoService:
    return DemoService(captioner)


# -- the page's functions (Gradio) --------------------------------------------------------------


def _payload(path: Path, name: str) -> dict:
    """What Gradio hands the event for an upload (``preprocess=False``)."""
    return {"path": str(path), "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def test_page_reports_errors_under_the_uploaded_name(
    service: DemoService, files: dict[str, Path]
) -> None:
    pytest.importorskip("gradio", reason="the app extra is not installed")
    from captioning.app import attention_views

    uploads = [_payload(files["bad"], "my_holiday.png"), _payload(files["good"], "shapes.png")]
    settings = [["greedy", "greedy"], [3, 3], [3, 3], [1.0, 1.0], [0, 0]]
    status, captions, tables, answers = decode_requests(service, uploads, settings)
    # named as uploaded, Markdown's characters shown as themselves
    assert status[0].startswith("**Error:** cannot load image my\\_holiday.png")
    assert str(files["bad"]) not in status[0]  # the server's path stays on the server
    assert status[1] == "" and captions[1] == answers[1].caption != ""
    assert f"| 1 | {answers[1].nbest[0][0]:.4f} | {captions[1]} |" in tables[1]
    figure, choices, first = attention_views(answers[1])
    assert [label for label, _ in choices] == [
        f"{k}. {w}" for k, w in enumerate(answers[1].words, 1)
    ]
    assert figure.size[0] > first.size[0] > 0
    assert attention_views(answers[0]) == (None, [], None)
    # settings typed by hand into the API: an error for each request, no exception
    status, *_ = decode_requests(
        service, uploads, [["greedy"] * 2, ["x", 3], [3] * 2, [1] * 2, [0] * 2]
    )
    assert all(s.startswith("**Error:** bad request") for s in status)
    # a control that makes no search: that request's error, the others answered
    status, captions, *_ = decode_requests(
        service, uploads[1:] * 2, [["nonsense", "greedy"], [3] * 2, [3] * 2, [1] * 2, [0] * 2]
    )
    assert status[0].startswith("**Error:** unknown decoding 'nonsense'") and not captions[0]
    assert status[1] == "" and captions[1] == answers[1].caption


def _rss_mb() -> float:
    """This process' resident memory (Linux ``/proc``), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_fifty_mixed_requests_leave_memory_flat(
    service: DemoService, files: dict[str, Path]
) -> None:
    """50 requests (good files, bad files, too large; each decoding) through what the page runs
    per request: decoding, then drawing the attention figures. RSS after 50 requests may exceed
    RSS after 10 by at most 30 MB (measured: about 10 MB of warm-up, then flat to 150 requests;
    keeping a figure's pixels per request would add about 4 MB each, 160 MB here)."""
    pytest.importorskip("gradio", reason="the app extra is not installed")
    from captioning.app import attention_views

    kinds = ["good", "bad", "other", "big", "third"]
    methods = ["greedy", "beam search", "sampling", "greedy", "beam search"]
    rss = {}
    for k in range(1, 51):
        upload = _payload(files[kinds[k % 5]], f"upload{k}.png")
        settings = [[methods[k % 5]], [3], [3], [1.0], [k]]
        status, _, _, [answer] = decode_requests(service, [upload], settings)
        assert bool(status[0]) == (kinds[k % 5] in ("bad", "big")), status
        attention_views(answer)
        if k in (10, 50):
            rss[k] = _rss_mb()
    print(f"RSS after 10 requests: {rss[10]:.1f} MB, after 50: {rss[50]:.1f} MB")
    assert rss[50] - rss[10] < 30, rss


# -- the command line ---------------------------------------------------------------------------


def test_serve_prints_the_public_link_hint_with_the_commands_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from captioning.app import serve
    from captioning.app.page_assets import GRADIO_SHARE_HINT

    launched: dict = {}

    class FakeDemo:  # prints what Gradio 6 prints at start-up, then returns at once
        def queue(self, **kwargs):
            return self

        def launch(self, **kwargs):
            launched.update(kwargs)
            print("* Running on local URL:  http://127.0.0.1:7860")
            print(GRADIO_SHARE_HINT)

        def block_thread(self):
            launched["blocked"] = True

    serve(FakeDemo(), max_file_size="2mb")
    out = capsys.readouterr().out
    assert "Running on local URL" in out and "--share" in out
    assert "share=True" not in out and "launch()" not in out
    assert launched["blocked"] and "2097152" in launched["head"]  # the guard knows the limit
    assert "nowrap" in launched["css"]


def test_file_sizes_read_as_gradio_reads_them() -> None:
    from captioning.app.page_assets import file_size_bytes
    from captioning.errors import CaptioningError

    assert file_size_bytes("20mb") == 20 * 1024**2 and file_size_bytes("3 KB") == 3072
    assert file_size_bytes(500) == 500 and file_size_bytes("7") == 7
    with pytest.raises(CaptioningError, match="whole number with a unit"):
        file_size_bytes("20 megs")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- in a real browser --------------------------------------------------------------------------


def _start_app(checkpoint: Path, port: int, tmp_path: Path, *extra: str) -> subprocess.Popen:
    """``tools/demo_app.py`` (with `extra` arguments) in a subprocess; returns once it answers
    HTTP (or fails)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env["GRADIO_TEMP_DIR"] = str(tmp_path / "gradio")
    with (tmp_path / "app.log").open("w") as log:  # the child keeps its own descriptor
        app = subprocess.Popen(
            [
                sys.executable,
                str(TOOLS / "demo_app.py"),
                "-c",
                str(checkpoint),
                "--port",
                str(port),
                *extra,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    for _ in range(600):
        if app.poll() is not None:
            pytest.fail(f"the app exited:\n{(tmp_path / 'app.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as page:
                if page.status == 200:
                    return app
        except OSError:
            time.sleep(0.2)
    app.kill()
    app.wait()
    pytest.fail(f"the app never answered:\n{(tmp_path / 'app.log').read_text()}")


def _browser(chromium: str, tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        *chromium_flags(tmp_path / "chromium-profile"),
        "--window-size=1400,1100",
        # every host but this machine fails to resolve: the page must not need any
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = shutil.which("chromedriver")
    if driver is None:  # Selenium would download one: not in a test
        message = "chromedriver not installed (apt-get install chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}, but CI is set")
        pytest.skip(message)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.slow
def test_page_in_chromium_captions_uploads_and_survives_a_bad_one(
    files: dict[str, Path], captioner: Captioner, chromium: str, tmp_path: Path
) -> None:
    pytest.importorskip("gradio", reason="the app extra is not installed")
    pytest.importorskip("selenium", reason="the dev extra is not installed")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    expected = captioner.caption(files["good"])
    assert expected  # the seeded tiny model says something for this image
    steps, _ = attention_steps(captioner.generate([files["good"]]), captioner.vocab)
    port = _free_port()
    browser = _browser(chromium, tmp_path)
    app = None
    try:
        app = _start_app(files["attention"], port, tmp_path)
        wait = WebDriverWait(browser, 45)
        browser.get(f"http://127.0.0.1:{port}/")
        upload = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#image input[type=file]"))
        status = browser.find_element(By.ID, "status")
        caption = browser.find_element(By.CSS_SELECTOR, "#caption textarea")

        # the page's last example: the tool writes shapes_examples' scenes
        example = shapes_examples(tmp_path / "examples")[-1]
        browser.find_elements(By.CSS_SELECTOR, "#examples button.gallery-item")[-1].click()
        wait.until(lambda b: caption.get_attribute("value"))
        assert caption.get_attribute("value") == captioner.caption(example)

        upload = browser.find_element(By.CSS_SELECTOR, "#image input[type=file]")
        upload.send_keys(str(files["bad"]))  # not an image: a message on the page
        wait.until(lambda b: "cannot load image" in status.text)
        assert "notes.png" in status.text and "Traceback" not in browser.page_source
        assert caption.get_attribute("value") == ""

        upload = browser.find_element(By.CSS_SELECTOR, "#image input[type=file]")
        upload.send_keys(str(files["good"]))  # the page still works
        wait.until(lambda b: caption.get_attribute("value"))
        assert caption.get_attribute("value") == expected
        assert status.text == ""
        assert expected in browser.find_element(By.ID, "nbest").text
        words = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#word label"))
        assert [w.text for w in words] == [f"{k}. {w}" for k, w in enumerate(steps, 1)]
        single = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#word-map img"))
        before = single.get_attribute("src")
        words[-1].click()  # another word: another map
        wait.until(
            lambda b: (
                b.find_element(By.CSS_SELECTOR, "#word-map img").get_attribute("src") != before
            )
        )
        assert browser.find_element(By.CSS_SELECTOR, "#attention img").get_attribute("src")
        shot = tmp_path / "demo_app.png"
        assert browser.save_screenshot(str(shot)) and Image.open(shot).size[0] > 0

        requests = [
            json.loads(entry["message"])["message"]["params"]["request"]["url"]
            for entry in browser.get_log("performance")
            if '"Network.requestWillBeSent"' in entry["message"]
        ]
        web = [u for u in requests if u.split(":", 1)[0] in ("http", "https", "ws", "wss")]
        assert web, "no request logged"
        elsewhere = [u for u in web if not u.startswith(f"http://127.0.0.1:{port}/")]
        assert not elsewhere, f"the page fetched from elsewhere: {elsewhere}"
    finally:
        browser.quit()
        if app is not None:
            app.terminate()
            app.wait(timeout=30)


def _noise_png(path: Path, side: int) -> Path:
    """A PNG of random pixels (about 3 bytes a pixel: it does not compress)."""
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.slow
def test_page_keeps_its_answer_on_an_oversized_upload_and_scores_stay_on_one_line(
    files: dict[str, Path], chromium: str, tmp_path: Path
) -> None:
    """An upload over --max-file-size: a status line, no pop-up, and the previous image, caption
    and maps stay; the n-best scores never wrap at 1400 px; the start-up hint names --share."""
    pytest.importorskip("gradio", reason="the app extra is not installed")
    pytest.importorskip("selenium", reason="the dev extra is not installed")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    big = _noise_png(tmp_path / "huge_photo.png", 700)  # about 1.4 MB
    assert big.stat().st_size > 1024**2
    port = _free_port()
    browser = _browser(chromium, tmp_path)
    app = None
    try:
        app = _start_app(files["attention"], port, tmp_path, "--max-file-size", "1mb")
        wait = WebDriverWait(browser, 45)
        browser.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#image input[type=file]"))
        # beam search, 5 captions: a table of five scores
        browser.find_element(By.CSS_SELECTOR, "#method input[value='beam search']").click()
        upload = browser.find_element(By.CSS_SELECTOR, "#image input[type=file]")
        upload.send_keys(str(files["good"]))
        caption = browser.find_element(By.CSS_SELECTOR, "#caption textarea")
        wait.until(lambda b: caption.get_attribute("value"))
        figure = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#attention img"))
        before = {
            "caption": caption.get_attribute("value"),
            "nbest": browser.find_element(By.ID, "nbest").text,
            "figure": figure.get_attribute("src"),
            "image": browser.find_element(By.CSS_SELECTOR, "#image img").get_attribute("src"),
        }
        scores = browser.find_elements(By.CSS_SELECTOR, "#nbest table tbody td:nth-child(2)")
        assert scores, browser.find_element(By.ID, "nbest").get_attribute("innerHTML")
        for cell in scores:
            style, lines = browser.execute_script(
                "var r = document.createRange(); r.selectNodeContents(arguments[0]);"
                "return [getComputedStyle(arguments[0]).whiteSpace, r.getClientRects().length];",
                cell,
            )
            assert style == "nowrap" and lines == 1, (cell.text, style, lines)

        upload = browser.find_element(By.CSS_SELECTOR, "#image input[type=file]")
        upload.send_keys(str(big))
        status = browser.find_element(By.ID, "status")
        wait.until(lambda b: "huge_photo.png" in status.text)
        assert "1MB upload limit" in status.text and "--max-file-size" in status.text
        time.sleep(2)  # what Gradio would have done by now: a pop-up, an empty image
        assert not browser.find_elements(By.CSS_SELECTOR, ".toast-body")
        after = {
            "caption": caption.get_attribute("value"),
            "nbest": browser.find_element(By.ID, "nbest").text,
            "figure": browser.find_element(By.CSS_SELECTOR, "#attention img").get_attribute("src"),
            "image": browser.find_element(By.CSS_SELECTOR, "#image img").get_attribute("src"),
        }
        assert after == before

        upload = browser.find_element(By.CSS_SELECTOR, "#image input[type=file]")
        upload.send_keys(str(files["other"]))  # the page goes on; the line goes
        wait.until(lambda b: "huge_photo.png" not in status.text)
        wait.until(
            lambda b: (
                b.find_element(By.CSS_SELECTOR, "#image img").get_attribute("src")
                != before["image"]
            )
        )
        log = (tmp_path / "app.log").read_text()  # Gradio's start-up lines, long printed
        assert "public link" in log and "--share" in log and "share=True" not in log, log
    finally:
        browser.quit()
        if app is not None:
            app.terminate()
            app.wait(timeout=30)
