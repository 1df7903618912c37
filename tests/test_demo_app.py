"""The web demo (``tools/demo_app.py``, :mod:`captioning.app`): the request handling against
``Captioner``, bad uploads, memory over many requests, the command line, and the page in a real
browser (headless Chromium through Selenium)."""

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

import numpy as np
import pytest
from helpers import (
    ROOT,
    TOOLS,
    assert_one_line_error,
    chromium_flags,
    run_tool,
    tiny_checkpoint,
    tiny_model_config,
)
from PIL import Image

from captioning.app import Answer, DemoService, decode_requests, method_of, shapes_examples
from captioning.decoding import DecodingSettings
from captioning.errors import CaptioningError
from captioning.inference import Captioner
from captioning.visualize import attention_steps

# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two checkpoints (attention, GRU), shapes images and bad files."""
    root = tmp_path_factory.mktemp("demo")
    shapes = shapes_examples(root / "images", count=3, seed=5)
    (root / "notes.png").write_text("not an image at all")
    Image.new("RGB", (400, 300), "white").save(root / "big.png")  # 120000 pixels
    return {
        "attention": tiny_checkpoint(
            root / "attention.pt", tiny_model_config(decoder="attention", max_len=6)
        ),
        "gru": tiny_checkpoint(root / "gru.pt"),
        "good": shapes[0],
        "other": shapes[1],
        "third": shapes[2],
        "bad": root / "notes.png",
        "big": root / "big.png",
    }


@pytest.fixture(scope="module")
def captioner(files: dict[str, Path]) -> Captioner:
    return Captioner.from_checkpoint(files["attention"], device="cpu", max_pixels=100_000)


@pytest.fixture(scope="module")
def service(captioner: Captioner) -> DemoService:
    return DemoService(captioner)


# -- the request handling -----------------------------------------------------------------------


def test_default_decoding_gives_the_captioners_caption_and_attention(
    service: DemoService, captioner: Captioner, files: dict[str, Path]
) -> None:
    [answer] = service.answer([files["good"]], [service.default_decoding()])
    assert answer.error is None
    assert answer.caption == captioner.caption(files["good"])
    assert [text for _, text in answer.nbest] == [answer.caption]
    assert answer.words and answer.view is not None
    regions = captioner.generate([files["good"]]).attention.shape[-1]  # L
    assert answer.attention.shape == (len(answer.words), regions)  # (T, L)
    np.testing.assert_allclose(answer.attention.sum(axis=1), 1.0, rtol=1e-5)


def test_beam_search_lists_the_n_best_with_the_captioners_scores(
    service: DemoService, captioner: Captioner, files: dict[str, Path]
) -> None:
    ask = service.settings_for("beam search", beam_size=3, n_best=3)
    [answer] = service.answer([files["good"]], [ask])
    gen = captioner.generate([files["good"]], beam_size=3, n_best=3)
    assert [t for _, t in answer.nbest] == captioner.caption(files["good"], beam_size=3, n_best=3)
    np.testing.assert_allclose([s for s, _ in answer.nbest], gen.scores[0].numpy(), rtol=1e-6)
    assert answer.caption == captioner.caption(files["good"], beam_size=3)  # the best one
    # n-best above the beam size lists the whole beam
    wide_ask = service.settings_for("beam search", beam_size=2, n_best=9)
    [wide] = service.answer([files["good"]], [wide_ask])
    assert len(wide.nbest) == 2


def test_sampling_is_sorted_and_reproducible_by_seed(
    service: DemoService, files: dict[str, Path]
) -> None:
    ask = service.settings_for("sampling", n_best=5, temperature=1.5)
    [first], [again] = (
        service.answer([files["good"]], [ask], [7]),
        service.answer([files["good"]], [ask], [7]),
    )
    assert first.nbest == again.nbest and len(first.nbest) == 5
    scores = [s for s, _ in first.nbest]
    assert scores == sorted(scores, reverse=True)
    assert first.caption == first.nbest[0][1] and first.words  # the best sample's attention


def test_a_batch_answers_each_request_as_alone(
    service: DemoService, files: dict[str, Path]
) -> None:
    images = [files["good"], files["other"], files["third"], files["good"]]
    asks = [service.settings_for(m) for m in ("greedy", "beam search", "greedy")]
    asks[1] = service.settings_for("beam search", 3, 2)
    asks.append(service.settings_for("sampling", n_best=2))
    seeds = [0, 0, 0, 1]
    together = service.answer(images, asks, seeds)
    alone = [
        service.answer([image], [ask], [seed])[0]
        for image, ask, seed in zip(images, asks, seeds, strict=True)
    ]
    for a, b in zip(together, alone, strict=True):
        assert a.caption == b.caption and a.words == b.words
        np.testing.assert_allclose([s for s, _ in a.nbest], [s for s, _ in b.nbest], rtol=1e-5)


def test_bad_files_and_settings_are_one_line_errors(
    service: DemoService, files: dict[str, Path]
) -> None:
    images = [files["bad"], files["big"], files["good"], None, files["other"]]
    asks = [service.default_decoding()] * 4 + [DecodingSettings(beam_size=10**6)]
    bad, big, good, empty, huge = service.answer(images, asks)
    assert huge.error == "beam_size must be in 1..20, got 1000000"
    with pytest.raises(CaptioningError, match=r"^beam_size must be in 1..20, got 1000000$"):
        service.settings_for("beam search", beam_size=10**6)
    with pytest.raises(CaptioningError, match="unknown decoding 'nonsense'"):
        service.settings_for("nonsense")
    assert "cannot load image" in bad.error and str(files["bad"]) in bad.error
    assert "100000" in big.error.replace(",", "").replace("_", "")
    for answer in (bad, big, huge):
        assert "\n" not in answer.error and not answer.caption and answer.view is None
    assert good.error is None and good.caption
    assert empty == Answer()


def test_a_beam_checkpoint_without_attention(files: dict[str, Path], tmp_path: Path) -> None:
    """The page starts on the checkpoint's own search (a beam here: the caption is the one
    ``Captioner`` gives without arguments, and the whole beam is listed); no maps."""
    config = tiny_model_config(cell="gru", max_len=5)
    config["decoding"]["beam_size"] = 3
    captioner = Captioner.from_checkpoint(
        tiny_checkpoint(tmp_path / "beam.pt", config), device="cpu"
    )
    service = DemoService(captioner)
    assert service.default_decoding() == service.settings_for("beam search", 3, 3)
    assert service.default_decoding() == captioner.decoding.replace(n_best=3)
    assert method_of(service.default_decoding()) == "beam search"
    assert not service.has_attention
    [answer] = service.answer([files["good"]], [service.default_decoding()])
    assert answer.caption == captioner.caption(files["good"]) and len(answer.nbest) == 3
    assert answer.attention is None and answer.view is None and not answer.words


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_refuses_a_missing_checkpoint_in_one_line(tmp_path: Path) -> None:
    pytest.importorskip("gradio", reason="the app extra is not installed")
    out = run_tool("demo_app.py", "--checkpoint", tmp_path / "missing.pt", timeout=120)
    assert_one_line_error(out, "missing.pt")


@pytest.mark.slow
def test_cli_refuses_a_taken_port_in_one_line(files: dict[str, Path]) -> None:
    pytest.importorskip("gradio", reason="the app extra is not installed")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_tool("demo_app.py", "-c", files["gru"], "--port", port, timeout=120)
    assert_one_line_error(out, f"127.0.0.1:{port}")


# -- in a real browser --------------------------------------------------------------------------


def _start_app(checkpoint: Path, port: int, tmp_path: Path) -> subprocess.Popen:
    """``tools/demo_app.py`` in a subprocess; returns once it answers HTTP (or fails)."""
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
