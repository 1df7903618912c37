"""tools/evaluate.py: official numbers and agreement with pycocoevalcap, usage errors, checkpoint
and results modes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FIXTURES, ROOT, fit, needs_java, run_tool, tiny_cfg, write_json

from captioning.evaluation.metrics import METRIC_KEYS

DATA = FIXTURES / "coco-karpathy-test"
REFS_FILE = DATA / "captions_karpathy_test_refs.json"
TOOL = [sys.executable, str(ROOT / "tools" / "evaluate.py")]
NLTK_KEYS = [f"nltk_Bleu_{n}" for n in range(1, 5)]


def _html_scores(page: str) -> dict[int, list[float]]:
    """image id -> the numbers of its row (the metric columns)."""
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
    rows = _html_scores(page.read_text())  # CIDEr, BLEU-4, METEOR, ROUGE-L per image
    assert len(rows) == 200
    # rows name the images' files (from the references file: no --images folder was given)
    names = [im["file_name"] for im in json.loads(REFS_FILE.read_text())["images"]]
    assert all(f">{name}<" in page.read_text() for name in names[:10])
    for image_id, values in rows.items():
        want = official.imgToEval[image_id]
        got = dict(zip(["CIDEr", "Bleu_4", "METEOR", "ROUGE_L"], values, strict=True))
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
    assert "max_len=4" in done.stdout and "beam_size=3" in done.stdout  # the run's own (beam 3)
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


def test_results_mode_chair_counts_objects_the_references_name(
    tmp_path: Path, no_java: None
) -> None:
    """CHAIR's truth as in the paper: instances plus the objects the references name."""
    refs = write_json(
        tmp_path / "refs.json",
        {
            "images": [{"id": 1, "file_name": "1.jpg"}],
            "annotations": [{"id": 1, "image_id": 1, "caption": "a dog and a kitten on a sofa"}],
        },
    )
    instances = write_json(
        tmp_path / "instances.json",
        {
            "images": [{"id": 1}],
            "categories": [{"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 18}],
        },
    )
    res = write_json(tmp_path / "res.json", [{"image_id": 1, "caption": "a dog and two cats"}])
    done = run_tool("evaluate.py", "--references", refs, "--results", res, "--instances", instances)
    assert done.returncode == 0, done.stderr
    scores = json.loads((tmp_path / "res_scores.json").read_text())
    assert scores["CHAIR_i"] == 0.0 and scores["CHAIR_s"] == 0.0  # the cats: a reference's kitten


@pytest.mark.slow
def test_results_mode_on_shapes_reports_relation_accuracy_in_table_json_and_html(
    shapes_root: Path, tmp_path: Path, no_java: None
) -> None:
    """A shapes references file carries its objects: results mode scores the relations the
    captions state (here every image's own relation-bearing reference, one of them flipped)."""
    refs = shapes_root / "annotations" / "captions_test.json"
    first: dict[int, str] = {}
    for ann in json.loads(refs.read_text())["annotations"]:
        caption = first.setdefault(ann["image_id"], ann["caption"])
        if " above " not in caption and " above " in ann["caption"]:
            first[ann["image_id"]] = ann["caption"]  # prefer a caption stating "above"
    flipped = min(i for i, c in first.items() if " above " in c)
    first[flipped] = first[flipped].replace(" above ", " below ")
    results = [{"image_id": i, "caption": c} for i, c in first.items()]
    stating = [c for c in first.values() if re.search(r" (above|below|left of|right of) ", c)]
    res, page = write_json(tmp_path / "res.json", results), tmp_path / "report.html"
    done = run_tool("evaluate.py", "--references", refs, "--results", res, "--html", page)
    assert done.returncode == 0, done.stderr
    scores = json.loads((tmp_path / "res_scores.json").read_text())
    expected = (len(stating) - 1) / len(stating)
    assert scores["shapes_relation_accuracy"] == pytest.approx(expected)
    assert re.search(rf"shapes_relation_accuracy\s+{expected:.4f}", done.stdout), done.stdout
    assert "relation" in done.stdout.split("grounded metrics (shapes)")[1]
    assert "<dt>shapes_relation_accuracy</dt>" in page.read_text()


def test_evaluate_usage_errors_are_one_line_and_help_is_whole(capsys: pytest.CaptureFixture):
    """issue 23: --beam-size 0 printed the whole usage block (caption.py: one line); --help's
    description stopped mid-sentence and --split hid its default."""
    from captioning.cli.evaluate import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--checkpoint", "x", "--beam-size", "0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "usage:" not in err
    assert err.startswith("error: argument --beam-size: must be at least 1, got 0")
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(objects named right, CHAIR) where the data set has ground truth. options:" in text
    assert "data split to decode (checkpoint mode; default: test)" in text
