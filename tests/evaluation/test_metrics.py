"""Metrics (captioning.evaluation.metrics): official numbers, nltk BLEU, java-free fallbacks."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from helpers import FIXTURES, HAS_JAVA, needs_java
from nltk.translate.bleu_score import corpus_bleu

from captioning.errors import CaptioningError
from captioning.evaluation import load_references, load_results, metrics
from captioning.evaluation.metrics import METRIC_KEYS, coco_scores, evaluate_captions, nltk_bleu

DATA = FIXTURES / "coco-karpathy-test"

REFS = {
    1: ["A man riding a horse on a beach.", "A person rides a brown horse", "man on horseback"],
    2: ["Two dogs play in the snow.", "a pair of dogs running through snow"],
    3: ["A plate of food with broccoli", "broccoli and rice on a white plate"],
}
PREDS = {1: "a man riding a horse", 2: "two dogs playing in snow", 3: "a plate of broccoli"}


# --------------------------------------------------------------------------- regression


@pytest.mark.slow
@needs_java
def test_reproduces_official_scores_on_karpathy_test() -> None:
    refs = load_references(DATA / "captions_karpathy_test_refs.json")
    preds = load_results(DATA / "results_human_heldout.json", refs)
    expected = json.loads((DATA / "expected_scores.json").read_text())
    assert (len(refs), len(preds)) == (4982, 4982)
    report = coco_scores(refs, preds)
    assert report.tokenizer == "ptb" and report.notices == [] and report.num_images == 4982
    assert set(expected) == set(METRIC_KEYS)
    for key, value in expected.items():
        assert abs(report.scores[key] - value) < 5e-7, (key, report.scores[key], value)
    assert all(type(v) is float for v in report.scores.values())


# --------------------------------------------------------------------------- nltk_bleu


def test_nltk_bleu_prediction_equal_to_a_reference_scores_one() -> None:
    scores = nltk_bleu(REFS, {i: REFS[i][1] for i in REFS})
    assert list(scores) == [f"nltk_Bleu_{n}" for n in range(1, 5)]
    assert all(type(v) is float and v == pytest.approx(1.0) for v in scores.values())


def test_nltk_bleu_matches_hand_tokenized_corpus_bleu() -> None:
    refs = {7: ["A cat sits on a mat.", "There is a cat on the mat"], 8: ["A dog barks loudly!"]}
    preds = {7: "A cat on the mat.", 8: "a dog barks"}
    hand_refs = [
        [["a", "cat", "sits", "on", "a", "mat"], ["there", "is", "a", "cat", "on", "the", "mat"]],
        [["a", "dog", "barks", "loudly"]],
    ]
    hand_hyps = [["a", "cat", "on", "the", "mat"], ["a", "dog", "barks"]]
    scores = nltk_bleu(refs, preds)
    for n in range(1, 5):
        expected = corpus_bleu(hand_refs, hand_hyps, weights=[1.0 / n] * n)
        assert scores[f"nltk_Bleu_{n}"] == pytest.approx(expected, abs=1e-12)
    assert 0 < scores["nltk_Bleu_4"] < scores["nltk_Bleu_1"] < 1


def test_nltk_bleu_uses_all_references_and_only_predicted_images() -> None:
    preds = {1: REFS[1][1]}  # equals the *second* reference of image 1
    assert nltk_bleu(REFS, preds)["nltk_Bleu_4"] == pytest.approx(1.0)
    assert nltk_bleu({1: REFS[1][:1]}, preds)["nltk_Bleu_1"] < 1.0
    with pytest.raises(CaptioningError, match="99"):
        nltk_bleu(REFS, {99: "a cat"})


# --------------------------------------------------------------------------- coco_scores


def test_per_image_scores_for_every_image() -> None:
    report = coco_scores(REFS, PREDS, per_image=True)
    assert set(report.per_image) == set(PREDS) and report.num_images == 3
    keys = {"Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"} | ({"METEOR"} if HAS_JAVA else set())
    for values in report.per_image.values():
        assert keys <= set(values) and all(type(v) is float for v in values.values())
    cider = [v["CIDEr"] for v in report.per_image.values()]
    assert report.scores["CIDEr"] == pytest.approx(sum(cider) / len(cider))
    json.dumps(report.per_image)
    assert coco_scores(REFS, PREDS, metrics=("Bleu",)).per_image == {}


def test_scores_only_the_predicted_images_against_their_own_references(no_java: None) -> None:
    perfect = {i: REFS[i][0] for i in REFS}
    report = coco_scores({**REFS, 4: ["unused"]}, perfect, metrics=("Bleu", "ROUGE_L"))
    assert report.num_images == 3
    assert report.scores["Bleu_4"] == pytest.approx(1.0) and report.scores["ROUGE_L"] == 1.0
    with pytest.raises(CaptioningError, match="99"):
        coco_scores(REFS, {**PREDS, 99: "a cat"})
    with pytest.raises(CaptioningError, match="unknown metrics"):
        coco_scores(REFS, PREDS, metrics=("BLEU",))


def test_without_java_falls_back_to_project_tokenizer(no_java: None) -> None:
    report = coco_scores(REFS, PREDS, spice=True)
    assert report.tokenizer == "project"
    assert set(report.scores) == set(METRIC_KEYS) - {"METEOR"}
    assert any("METEOR skipped: java not found" in n for n in report.notices)
    assert any("SPICE skipped: java not found" in n for n in report.notices)
    assert all("\n" not in n for n in report.notices)


@needs_java
def test_meteor_subprocess_is_terminated(monkeypatch: pytest.MonkeyPatch) -> None:
    from pycocoevalcap.meteor import meteor as meteor_module

    created = []

    class Recording(meteor_module.Meteor):
        def __init__(self) -> None:
            super().__init__()
            created.append(self)

    monkeypatch.setattr(meteor_module, "Meteor", Recording)
    report = coco_scores(REFS, PREDS, metrics=("METEOR",))
    assert 0 < report.scores["METEOR"] <= 1 and len(created) == 1
    assert created[0].meteor_p.returncode is not None  # killed and reaped


@needs_java
def test_java_scorers_run_outside_the_callers_process_group(monkeypatch: pytest.MonkeyPatch):
    """The PTB tokenizer and METEOR start in a session of their own: a Ctrl-C (SIGINT to the
    terminal's process group) meant for a training run does not cut their output short."""
    import os
    import subprocess

    groups, real = [], subprocess.Popen

    class Recording(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            groups.append(os.getpgid(self.pid))

    monkeypatch.setattr(subprocess, "Popen", Recording)
    report = coco_scores(REFS, PREDS, metrics=("Bleu", "METEOR"))
    assert report.tokenizer == "ptb" and 0 < report.scores["METEOR"] <= 1
    assert len(groups) == 3 and os.getpgid(0) not in groups  # 2 tokenizer runs, METEOR
    assert metrics.subprocess is subprocess  # pycocoevalcap's modules are restored
    from pycocoevalcap.tokenizer import ptbtokenizer

    assert ptbtokenizer.subprocess is subprocess


def test_spice_without_jars_is_skipped_without_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pycocoevalcap.spice import get_stanford_models, spice

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("SPICE tried to download its models")

    monkeypatch.setattr(get_stanford_models, "urlretrieve", no_network)
    monkeypatch.setattr(urllib.request, "urlretrieve", no_network)
    monkeypatch.setattr(spice.Spice, "__init__", no_network)
    monkeypatch.setattr(metrics, "_spice_jar_paths", lambda: [tmp_path / "lib" / "corenlp.jar"])
    report = coco_scores(REFS, PREDS, metrics=("Bleu",), spice=True)
    assert "SPICE" not in report.scores and "Bleu_4" in report.scores
    assert len(report.notices) == 1 and report.notices[0].startswith("SPICE skipped")
    assert "\n" not in report.notices[0]


def test_spice_jar_paths_follow_pycocoevalcap() -> None:
    paths = metrics._spice_jar_paths()
    assert [p.name for p in paths] == [
        "stanford-corenlp-3.6.0.jar",
        "stanford-corenlp-3.6.0-models.jar",
    ]
    assert paths[0].parent.name == "lib" and paths[0].parent.parent.name == "spice"


@needs_java
def test_odd_line_breaks_do_not_shift_captions() -> None:
    refs = {1: ["a red\rbus", "a bus"], 2: ["a green tree"]}
    report = coco_scores(
        refs, {1: "a red bus", 2: "a green tree"}, metrics=("Bleu",), per_image=True
    )
    assert report.per_image[2]["Bleu_1"] == pytest.approx(1.0)


def test_evaluate_captions_merges_nltk_bleu(no_java: None) -> None:
    report = evaluate_captions(REFS, PREDS)
    assert {"Bleu_4", "CIDEr", "nltk_Bleu_1", "nltk_Bleu_4"} <= set(report.scores)
    assert report.scores["nltk_Bleu_4"] == nltk_bleu(REFS, PREDS)["nltk_Bleu_4"]
    json.dumps(report.scores)
