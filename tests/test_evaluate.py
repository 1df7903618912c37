"""Evaluation: official numbers and agreement with pycocoevalcap (tools/evaluate.py through its
command line), bad input, notices, the HTML report, and checkpoint mode (the library's
`captioning.evaluation`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import fit, needs_java, run_tool, tiny_cfg, write_json

from captioning.errors import CaptioningError
from captioning.evaluation import (
    checkpoint_split,
    evaluate_checkpoint,
    image_files,
    load_references,
    load_results,
    metrics,
    score_captions,
    write_scores,
)
from captioning.evaluation import decode as decode_module
from captioning.evaluation.html import write_scored_page
from captioning.evaluation.metrics import METRIC_KEYS
from captioning.inference import Captioner

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "coco-karpathy-test"
REFS_FILE = DATA / "captions_karpathy_test_refs.json"
TOOL = [sys.executable, str(ROOT / "tools" / "evaluate.py")]
NLTK_KEYS = [f"nltk_Bleu_{n}" for n in range(1, 5)]


def _html_scores(page: str) -> dict[int, list[float]]:
    """image id -> the numbers of its row (id, then the metric columns)."""
    rows = re.findall(r'<tr data-image-id="(\d+)">(.*?)</tr>', page, flags=re.S)
    return {int(i): [float(v) for v in re.findall(r'data-value="([^"]*)"', row)] for i, row in rows}


# --------------------------------------------------------------------------- official numbers


@pytest.mark.slow
@needs_java
def test_cli_reproduces_official_scores(tmp_path: Path) -> None:
    out = tmp_path / "scores.json"
    done = subprocess.run(
        [
            *TOOL,
            "--references",
            str(REFS_FILE),
            "--results",
            str(DATA / "results_human_heldout.json"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    scores = json.loads(out.read_text())
    expected = json.loads((DATA / "expected_scores.json").read_text())
    assert list(scores) == [*METRIC_KEYS, *NLTK_KEYS, "num_images"]
    for key, value in expected.items():
        assert round(scores[key], 6) == round(value, 6), key
        assert abs(scores[key] - value) < 5e-7, key
    assert scores["num_images"] == 4982
    assert "images scored: 4982" in done.stdout and "tokenizer: PTB" in done.stdout
    assert "0.8922" in done.stdout and "note:" not in done.stdout


def _perturbed(n: int = 200) -> list[dict]:
    """The first n held-out human captions, each changed differently (drop, swap, replace)."""
    results = json.loads((DATA / "results_human_heldout.json").read_text())[:n]
    for k, entry in enumerate(results):
        words = entry["caption"].split()
        if k % 4 == 0:
            words = words[:-2]
        elif k % 4 == 1:
            words[0], words[-1] = words[-1], words[0]
        elif k % 4 == 2:
            words[len(words) // 2] = "thing"
        entry["caption"] = " ".join(words) if k % 5 else " ".join(words).upper() + "!"
    return results


@pytest.mark.slow
@needs_java
def test_cli_agrees_with_cocoevalcap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pycocoevalcap import eval as coco_eval
    from pycocotools.coco import COCO

    results = write_json(tmp_path / "perturbed.json", _perturbed())
    out, page = tmp_path / "scores.json", tmp_path / "report.html"
    subprocess.run(
        [
            *TOOL,
            "--references",
            str(REFS_FILE),
            "--results",
            str(results),
            "--out",
            str(out),
            "--html",
            str(page),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    ours = json.loads(out.read_text())

    class NoSpice:  # SPICE would download Stanford CoreNLP
        def method(self) -> str:
            return "SPICE"

        def compute_score(self, gts: dict, res: dict) -> tuple[float, list[float]]:
            return 0.0, [0.0] * len(gts)

    monkeypatch.setattr(coco_eval, "Spice", NoSpice)
    coco = COCO(str(REFS_FILE))
    official = coco_eval.COCOEvalCap(coco, coco.loadRes(str(results)))
    official.params["image_id"] = official.cocoRes.getImgIds()
    official.evaluate()
    assert ours["num_images"] == 200
    for key in METRIC_KEYS:
        assert ours[key] == pytest.approx(official.eval[key], abs=1e-12), key
    rows = _html_scores(page.read_text())  # id, CIDEr, BLEU-4, METEOR, ROUGE-L per image
    assert len(rows) == 200
    for image_id, values in rows.items():
        want = official.imgToEval[image_id]
        got = dict(zip(["id", "CIDEr", "Bleu_4", "METEOR", "ROUGE_L"], values, strict=True))
        for key in ("CIDEr", "Bleu_4", "METEOR", "ROUGE_L"):
            assert got[key] == pytest.approx(want[key], abs=1e-12), (image_id, key)


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def small_refs(tmp_path: Path) -> Path:
    ann = {
        "images": [{"id": i, "file_name": f"{i}.jpg"} for i in (1, 2, 3)],
        "annotations": [
            {"id": 10 * i + j, "image_id": i, "caption": f"a cat number {i}"}
            for i in (1, 2, 3)
            for j in range(2)
        ],
    }
    return write_json(tmp_path / "refs.json", ann)


BAD_RESULTS = {
    "unknown ids": (
        [
            {"image_id": 1, "caption": "a cat"},
            {"image_id": 777, "caption": "x"},
            {"image_id": 888, "caption": "y"},
        ],
        ["not in the references", "777, 888"],
    ),
    "duplicates": (
        [{"image_id": 2, "caption": "a cat"}, {"image_id": 2, "caption": "a dog"}],
        ["duplicate image ids 2"],
    ),
    "empty": (
        [{"image_id": 1, "caption": "a cat"}, {"image_id": 3, "caption": "  "}],
        ["empty captions for image ids 3"],
    ),
    "not a list": ({"image_id": 1}, ["JSON list"]),
}


def test_bad_results_file_exits_2_with_the_ids_on_stderr(tmp_path: Path, small_refs: Path):
    entries, expected = BAD_RESULTS["unknown ids"]
    results = write_json(tmp_path / "res.json", entries)
    done = subprocess.run(
        [*TOOL, "--references", str(small_refs), "--results", str(results)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr and done.stderr.startswith("error: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert all(text in done.stderr for text in expected)


@pytest.mark.parametrize("case", sorted(BAD_RESULTS))
def test_bad_results_files_are_one_line_errors(tmp_path: Path, small_refs: Path, case: str) -> None:
    entries, expected = BAD_RESULTS[case]
    results = write_json(tmp_path / "res.json", entries)
    with pytest.raises(CaptioningError) as info:
        load_results(results, load_references(small_refs))
    message = str(info.value)
    assert "\n" not in message and str(results) in message
    assert all(text in message for text in expected)
    assert not (tmp_path / "res_scores.json").exists()


def test_usage_errors(tmp_path: Path, small_refs: Path):
    res = str(write_json(tmp_path / "res.json", [{"image_id": 1, "caption": "a cat"}]))
    errors = ""
    for argv in (
        ["--references", str(small_refs), "--results", res, "--beam-size", "3"],
        ["--references", str(small_refs)],
        ["--checkpoint", "x", "--images", "d"],
        ["--checkpoint", "x", "--beam-size", "0"],
        [],
    ):
        done = run_tool("evaluate.py", *argv)
        assert done.returncode == 2 and "Traceback" not in done.stderr, argv
        errors += done.stderr
    assert "--beam-size only apply with --checkpoint" in errors and "must be at least 1" in errors


# --------------------------------------------------------------------------- notices, SPICE


def test_without_java_notices_are_given(tmp_path: Path, small_refs: Path, no_java: None) -> None:
    res = write_json(tmp_path / "res.json", [{"image_id": i, "caption": "a cat"} for i in (1, 2)])
    refs = load_references(small_refs)
    out = tmp_path / "res_scores.json"
    scored = score_captions(refs, load_results(res, refs), spice=True)
    write_scores(out, scored.scores)
    notes = " | ".join(scored.notes)
    assert "METEOR skipped: java not found" in notes
    assert "SPICE skipped: java not found" in notes and "tokenizer: project" in notes
    assert scored.report.num_images == 2
    scores = json.loads(out.read_text())
    assert "METEOR" not in scores and "SPICE" not in scores and scores["num_images"] == 2


@needs_java
def test_spice_without_jars_is_skipped_with_a_notice(
    tmp_path: Path, small_refs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "_spice_jar_paths", lambda: [tmp_path / "lib" / "corenlp.jar"])
    monkeypatch.setattr(metrics, "_run_meteor", lambda gts, res: (0.5, [0.5] * len(gts)))  # fast
    refs = load_references(small_refs)
    out = tmp_path / "s" / "scores.json"
    scored = score_captions(refs, {3: "a cat number 3"}, spice=True)
    write_scores(out, scored.scores)
    assert "SPICE skipped: Stanford CoreNLP jars missing" in " | ".join(scored.notes)
    scores = json.loads(out.read_text())
    assert "SPICE" not in scores and scores["CIDEr"] == 0.0 and scores["Bleu_4"] > 0.99


# --------------------------------------------------------------------------- HTML, results mode


def test_results_mode_html_thumbnails_from_images_dir(
    tiny_coco: Path, tmp_path: Path, no_java: None
) -> None:
    refs = load_references(tiny_coco / "annotations" / "captions_val.json")
    predictions = {100: "a blue circle", 101: "a blue square"}
    images = image_files(tiny_coco / "annotations" / "captions_val.json", tiny_coco / "images")
    scored = score_captions(refs, predictions, per_image=True)
    write_scored_page(tmp_path / "a.html", scored, refs, predictions, images=images)
    page = (tmp_path / "a.html").read_text()
    assert page.count("<img") == 2 and sorted(_html_scores(page)) == [100, 101]
    write_scored_page(tmp_path / "b.html", scored, refs, predictions)
    assert "<img" not in (tmp_path / "b.html").read_text()
    (tiny_coco / "images" / "e.jpg").unlink()
    scored = score_captions(refs, predictions, per_image=True)
    write_scored_page(tmp_path / "c.html", scored, refs, predictions, images=images)
    assert (tmp_path / "c.html").read_text().count("<img") == 1
    assert "1 of 2 image files not found" in " | ".join(scored.notes)


# --------------------------------------------------------------------------- checkpoint mode


def _tiny_cfg(shapes_root: Path, *overrides: str):
    return tiny_cfg(
        shapes_root,
        "trainer.epochs=1",
        "trainer.max_train_batches=2",
        "trainer.batch_size=32",
        "trainer.test_after_training=false",
        "++trainer.tensorboard=false",
        *overrides,
    )


@pytest.fixture(scope="module")
def tiny_run(shapes_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained for 2 batches, best checkpoint picked by validation CIDEr."""
    run = tmp_path_factory.mktemp("run")
    summary = fit(_tiny_cfg(shapes_root, "trainer.monitor=CIDEr"), run_dir=run)
    row = summary["history"][0]
    assert {"val_CIDEr", "val_Bleu_4", "val_num_images"} <= set(row)
    assert summary["best"] == row["val_CIDEr"]
    return run


def test_bad_monitor_name_is_a_clear_error(shapes_root: Path, tmp_path: Path) -> None:
    cfg = _tiny_cfg(shapes_root, "trainer.monitor=BLEU4", "trainer.max_train_batches=1")
    with pytest.raises(CaptioningError, match=r"trainer.monitor='BLEU4'.*Bleu_4.*CIDEr") as info:
        fit(cfg, run_dir=tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_checkpoint_mode_passes_only_given_decoding_options(
    tiny_run: Path, tmp_path: Path, no_java: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = decode_module.generate
    calls: list[tuple] = []

    def recording(model, features, settings=None, **kwargs):
        calls.append((settings, kwargs))
        return real(model, features, settings, **kwargs)

    monkeypatch.setattr(decode_module, "generate", recording)
    split = checkpoint_split(tiny_run / "checkpoints" / "best.pt", decoding={"max_len": 4})
    evaluation = split.evaluate(per_image=True)
    configured = Captioner.from_checkpoint(tiny_run, device="cpu").decoding  # the run's config
    settings, kwargs = calls[0]
    assert settings == configured.replace(max_len=4) and settings != configured
    assert {k for k in kwargs if not k.endswith("_id")} == set()  # nothing else passed
    assert evaluation.decoding == settings and len(evaluation.predictions) == 20
    page = tmp_path / "report.html"
    scored = evaluation.scored
    write_scored_page(
        page, scored, evaluation.references, evaluation.predictions, images=evaluation.images
    )
    assert set(scored.scores) >= {*METRIC_KEYS, *NLTK_KEYS, "num_images"} - {"METEOR"}
    html = page.read_text()
    assert len(_html_scores(html)) == 20 and html.count("<img") == 20


@pytest.mark.slow
def test_checkpoint_mode_cli_reports_the_decoding_it_used(tiny_run: Path, tmp_path: Path) -> None:
    results, page = tmp_path / "res.json", tmp_path / "report.html"
    done = run_tool(
        "evaluate.py",
        "-c",
        tiny_run / "checkpoints" / "best.pt",
        "--max-len",
        "4",
        "--results",
        results,
        "--html",
        page,
    )
    assert done.returncode == 0, done.stderr
    assert "decoded 20 images of split 'test', each once (" in done.stdout
    assert "max_len=4" in done.stdout and "beam_size=1" in done.stdout
    assert "images scored: 20" in done.stdout and "HTML report written" in done.stdout
    assert len(json.loads(results.read_text())) == 20
    assert json.loads((tmp_path / "res_scores.json").read_text())["num_images"] == 20
    done = run_tool(
        "evaluate.py",
        "-c",
        tiny_run,
        "--beam-size",
        "2",
        "--length-penalty",
        "0.5",
        "--no-repeat-ngram-size",
        "2",
    )
    assert done.returncode == 0, done.stderr
    for given in ("beam_size=2", "length_penalty=0.5", "no_repeat_ngram_size=2"):
        assert given in done.stdout
    written = tiny_run / "eval" / "test_beam2_lp0.5_norepeat2_results.json"
    assert written.is_file() and "-> " + str(written) in done.stdout  # the default name
    assert not (tiny_run / "test_results.json").exists()  # (this run skipped its test)


@pytest.mark.slow
def test_checkpoint_mode_beam_size_one_equals_greedy(tiny_run: Path) -> None:
    """Greedy captions of the test split (the run's config) equal a beam search of width one
    run through `beam_search` itself (`generate` would route beam size one to greedy)."""
    import torch

    from captioning.data.splits import load_split
    from captioning.decoding import beam_search

    greedy = evaluate_checkpoint(tiny_run, metrics=("Bleu",)).predictions
    captioner = Captioner.from_checkpoint(tiny_run, device="cpu")
    records = load_split(captioner_data(tiny_run), "test")
    images = torch.stack([captioner.preprocess(r.path) for r in records])  # (N, 3, H, W)
    vocab = captioner.vocab
    with torch.no_grad():
        beam = beam_search(
            captioner.model,
            captioner.model.encode(images),
            beam_size=1,
            max_len=captioner.decoding.max_len,
            bos_id=vocab.bos_id,
            eos_id=vocab.eos_id,
            pad_id=vocab.pad_id,
        )
    captions = [vocab.decode(seq[0]) for seq in beam.sequences.tolist()]  # (N, 1, T)
    assert captions == [greedy[r.image_id] for r in records]


def captioner_data(run: Path) -> dict:
    """The data config a run's best checkpoint was trained with."""
    from captioning.checkpoint import load_checkpoint

    return load_checkpoint(run)["config"]["data"]


# --------------------------------------------------------------------------- grounded metrics


@pytest.mark.slow
def test_checkpoint_mode_reports_grounded_metrics_and_marks_hallucinations(
    tiny_run: Path, tmp_path: Path
) -> None:
    """On the shapes data evaluation scores the objects too (from the data set's own ground
    truth), the same numbers the grounding module gives, and the page marks the words naming
    objects that are not in the image."""
    from captioning.evaluation.grounding import grounding_scores, load_shapes_truth

    results, page = tmp_path / "res.json", tmp_path / "report.html"
    done = run_tool("evaluate.py", "-c", tiny_run, "--results", results, "--html", page)
    assert done.returncode == 0, done.stderr
    assert "shapes_precision" in done.stdout and "CHAIR_i" in done.stdout
    assert "grounded metrics (shapes)" in done.stdout
    scores = json.loads((tmp_path / "res_scores.json").read_text())
    predictions = {r["image_id"]: r["caption"] for r in json.loads(results.read_text())}
    data = captioner_data(tiny_run)
    truth = load_shapes_truth(Path(data["root"]) / data["splits"]["test"]["annotations"])
    report = grounding_scores(predictions, truth)
    for key, value in report.scores.items():
        assert scores[key] == (None if value != value else pytest.approx(value)), key
    marked = sum(len(g.hallucinated_positions) for g in report.per_image.values())
    assert page.read_text().count("<mark ") == marked


def test_results_mode_chair_from_an_instances_file(tmp_path: Path, no_java: None) -> None:
    """--instances gives CHAIR and object recall for any COCO-style results file."""
    refs = write_json(
        tmp_path / "refs.json",
        {
            "images": [{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "2.jpg"}],
            "annotations": [
                {"id": 1, "image_id": 1, "caption": "a dog on a couch"},
                {"id": 2, "image_id": 2, "caption": "a man riding a horse"},
            ],
        },
    )
    instances = write_json(
        tmp_path / "instances.json",
        {
            "images": [{"id": 1}, {"id": 2}],
            "categories": [
                {"id": 18, "name": "dog"},
                {"id": 63, "name": "couch"},
                {"id": 1, "name": "person"},
                {"id": 19, "name": "horse"},
                {"id": 17, "name": "cat"},  # (a category no image here holds)
            ],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 18},
                {"id": 2, "image_id": 1, "category_id": 63},
                {"id": 3, "image_id": 2, "category_id": 1},
                {"id": 4, "image_id": 2, "category_id": 19},
            ],
        },
    )
    res = write_json(
        tmp_path / "res.json",
        [
            {"image_id": 1, "caption": "a dog and a cat on a couch"},  # the cat: hallucinated
            {"image_id": 2, "caption": "a woman riding a horse"},
        ],
    )
    done = run_tool("evaluate.py", "--references", refs, "--results", res, "--instances", instances)
    assert done.returncode == 0, done.stderr
    scores = json.loads((tmp_path / "res_scores.json").read_text())
    assert scores["CHAIR_i"] == pytest.approx(1 / 5)  # dog, cat, couch, woman, horse
    assert scores["CHAIR_s"] == pytest.approx(1 / 2)
    assert scores["object_recall"] == pytest.approx(1.0)  # dog, couch, person, horse
