"""The web demo's request handling (captioning.app.service) against the Captioner: each decoding,
batches, bad uploads and settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_checkpoint, tiny_model_config

from captioning.app import Answer, DemoService, method_of
from captioning.decoding import DecodingSettings
from captioning.errors import CaptioningError
from captioning.inference import Captioner

# -- fixtures -----------------------------------------------------------------------------------


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
    assert huge.error == '"Beam size" 1000000: must be in 1..20'  # the page's own control
    with pytest.raises(CaptioningError, match=r"^beam_size=1000000: must be in 1..20$"):
        service.settings_for("beam search", beam_size=10**6)  # the library's name
    with pytest.raises(CaptioningError, match="unknown decoding 'nonsense'"):
        service.settings_for("nonsense")
    assert "cannot load image" in bad.error and str(files["bad"]) in bad.error
    assert "exceeds this page's limit of 100000 pixels" in big.error  # not the library's name:
    assert "tools/demo_app.py --max-pixels" in big.error and "max_pixels" not in big.error
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
