"""The one evaluation path (captioning.evaluation.run): each image decoded once, then scored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import (
    captioner_data,
    html_scores,
    records_with_bad_files,
    tiny_checkpoint,
)

from captioning.evaluation import checkpoint_split, evaluate_checkpoint
from captioning.evaluation import decode as decode_module
from captioning.evaluation.html import write_scored_page
from captioning.evaluation.metrics import METRIC_KEYS
from captioning.inference import Captioner


def test_evaluation_leaves_unreadable_images_out_and_names_them(shapes_root, tmp_path, caplog):
    from captioning.decoding import DecodingSettings
    from captioning.evaluation import evaluate_split
    from captioning.inference import Captioner

    records = records_with_bad_files(shapes_root, tmp_path, 2)
    captioner = Captioner.from_checkpoint(tiny_checkpoint(tmp_path / "ck.pt"), device="cpu")
    with caplog.at_level("WARNING", logger="captioning.evaluation"):
        evaluation = evaluate_split(
            captioner.model,
            captioner.vocab,
            records,
            device=torch.device("cpu"),
            decoding=DecodingSettings(max_len=5),
            batch_size=2,  # the 1st batch: all bad
        )
    scores, predictions = evaluation.scores, evaluation.predictions
    assert evaluation.unreadable == 2
    assert sorted(predictions) == sorted(r.image_id for r in records[2:])
    assert scores["num_images"] == len(records) - 2
    left_out = [r.getMessage() for r in caplog.records if "left out of evaluation" in r.message]
    assert [records[k].path.name in left_out[k] for k in range(2)] == [True, True]


NLTK_KEYS = [f"nltk_Bleu_{n}" for n in range(1, 5)]


# --------------------------------------------------------------------------- checkpoint mode


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
    assert len(html_scores(html)) == 20 and html.count("<img") == 20


@pytest.mark.slow
def test_checkpoint_mode_beam_size_one_equals_greedy(tiny_run: Path) -> None:
    """Greedy captions of the test split (the run's config with ``beam_size=1``) equal a beam
    search of width one run through `beam_search` itself (`generate` would route beam size one
    to greedy)."""
    import torch

    from captioning.data.splits import load_split
    from captioning.decoding import beam_search

    greedy = evaluate_checkpoint(tiny_run, metrics=("Bleu",), decoding={"beam_size": 1})
    assert greedy.decoding.beam_size == 1
    greedy = greedy.predictions
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


# --------------------------------------------------------------------------- validation loss


def test_split_loss_is_the_training_cross_entropy_of_every_reference_per_word(
    shapes_root: Path, tmp_path: Path, no_java: None
) -> None:
    from captioning.data.datasets import CaptionDataset
    from captioning.data.loader import collate_captions
    from captioning.data.transforms import eval_transform
    from captioning.decoding import DecodingSettings
    from captioning.evaluation import evaluate_split
    from captioning.training.objectives import caption_cross_entropy

    records = records_with_bad_files(shapes_root, tmp_path, 0)[:6]
    captioner = Captioner.from_checkpoint(tiny_checkpoint(tmp_path / "ck.pt"), device="cpu")
    model, vocab = captioner.model, captioner.vocab
    evaluation = evaluate_split(
        model,
        vocab,
        records,
        device=torch.device("cpu"),
        decoding=DecodingSettings(max_len=3),
        batch_size=4,  # two batches: the sum runs over both
        loss=True,
        loss_max_len=4,
    )
    data = CaptionDataset(records, vocab, eval_transform(model.encoder.preprocess), max_len=4)
    batch = collate_captions([data[k] for k in range(len(records))], pad_id=vocab.pad_id)
    with torch.no_grad():
        total, words = caption_cross_entropy(
            model, batch.images, batch.captions, batch.lengths, batch.image_index
        )
    assert len(batch.captions) > len(records)  # several references per image
    assert evaluation.scores["loss"] == pytest.approx(float(total / words), rel=1e-5)


def test_split_loss_is_only_reported_when_asked(shapes_root: Path, tmp_path: Path, no_java) -> None:
    from captioning.decoding import DecodingSettings
    from captioning.evaluation import evaluate_split

    records = records_with_bad_files(shapes_root, tmp_path, 0)[:2]
    captioner = Captioner.from_checkpoint(tiny_checkpoint(tmp_path / "ck.pt"), device="cpu")
    evaluation = evaluate_split(
        captioner.model,
        captioner.vocab,
        records,
        device=torch.device("cpu"),
        decoding=DecodingSettings(max_len=3),
    )
    assert "loss" not in evaluation.scores


def test_reference_loss_is_the_same_in_chunks(shapes_root: Path, tmp_path: Path) -> None:
    from captioning.evaluation.decode import ReferenceLoss

    records = records_with_bad_files(shapes_root, tmp_path, 0)[:4]
    captioner = Captioner.from_checkpoint(tiny_checkpoint(tmp_path / "ck.pt"), device="cpu")
    model, vocab = captioner.model.eval(), captioner.vocab
    images = torch.stack([captioner.preprocess(r.path) for r in records])  # (4, 3, H, W)
    ids = [r.image_id for r in records]
    whole, chunked = (
        ReferenceLoss.of_records(records, vocab),
        ReferenceLoss.of_records(records, vocab),
    )
    chunked.chunk = 3  # fewer than one image's references: chunks cross images
    with torch.no_grad():
        features = model.encode(images)
        whole.add(model, features, ids)
        chunked.add(model, features, ids)
    assert (
        chunked.words
        == whole.words
        == sum(len(vocab.encode(c)) - 1 for r in records for c in r.captions)
    )
    assert chunked.total == pytest.approx(whole.total, rel=1e-5)
