"""Scoring captions (captioning.evaluation.scoring) and the HTML page of a scored split."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import html_scores, needs_java, write_json

from captioning.evaluation import (
    image_files,
    load_references,
    load_results,
    metrics,
    score_captions,
    write_scores,
)
from captioning.evaluation.html import write_scored_page

# --------------------------------------------------------------------------- bad input


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
    assert page.count("<img") == 2 and sorted(html_scores(page)) == [100, 101]
    assert re.findall(r'<td class="file"[^>]*>([^<]*)<', page) == [
        images[i].name for i in predictions
    ]  # rows named by file
    write_scored_page(tmp_path / "b.html", scored, refs, predictions)
    assert "<img" not in (tmp_path / "b.html").read_text()
    names = {i: p.name for i, p in images.items()}  # a references file's file names, no images
    write_scored_page(tmp_path / "n.html", scored, refs, predictions, names=names)
    named = (tmp_path / "n.html").read_text()
    assert "<img" not in named and all(f">{names[i]}<" in named for i in predictions)
    (tiny_coco / "images" / "e.jpg").unlink()
    scored = score_captions(refs, predictions, per_image=True)
    write_scored_page(tmp_path / "c.html", scored, refs, predictions, images=images)
    assert (tmp_path / "c.html").read_text().count("<img") == 1
    assert "1 of 2 image files not found" in " | ".join(scored.notes)


# --------------------------------------------------------------------------- CHAIR's truth


def test_chair_truth_joins_the_objects_the_references_name(no_java: None) -> None:
    """As in the CHAIR paper: an object a reference names is no hallucination (scores, HTML)."""
    from captioning.evaluation.grounding import GroundingTruth

    truth = GroundingTruth("coco", {1: frozenset({"dog"}), 2: frozenset({"dog"})})
    references = {1: ["a dog and a cat on a sofa"], 2: ["a dog on the grass"]}
    predictions = {1: "a cat on a couch", 2: "a cat on a couch"}
    scored = score_captions(references, predictions, metrics=("Bleu",), grounding=truth)
    assert scored.grounding is not None
    assert [m.object for m in scored.grounding.per_image[1].hallucinated] == []
    assert [m.object for m in scored.grounding.per_image[2].hallucinated] == ["cat", "couch"]
    assert scored.scores["CHAIR_i"] == pytest.approx(2 / 4)
    assert scored.scores["CHAIR_s"] == pytest.approx(1 / 2)
    assert set(scored.grounding.per_image[1].present) == {"dog", "cat", "couch"}
