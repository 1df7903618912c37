"""``_target_`` nodes (captioning.targets): resolved only under the library's packages, checked
against the builder's signature and type hints, kept exactly as the config gave them."""

from __future__ import annotations

import pytest

from captioning.errors import CaptioningError
from captioning.models.encoder import VGGEncoder
from captioning.targets import DecoderSettings, EncoderSettings

TINY = {"_target_": "captioning.models.encoder.vgg_tiny", "width": 4, "image_size": 32}


def test_a_node_is_kept_as_given_and_builds_its_model() -> None:
    settings = EncoderSettings.from_config(dict(TINY))
    assert settings.to_dict() == TINY and settings.target == TINY["_target_"]
    assert settings.arguments == {"width": 4, "image_size": 32}
    assert isinstance(settings.build(), VGGEncoder)


def test_unset_arguments_read_the_builders_defaults() -> None:
    settings = EncoderSettings.from_config(dict(TINY))
    assert settings.trainable is True and settings.fine_tune_from is None  # vgg_tiny's defaults
    frozen = EncoderSettings.from_config({**TINY, "trainable": False, "fine_tune_from": 2})
    assert frozen.trainable is False and frozen.fine_tune_from == 2


@pytest.mark.parametrize(
    "node, message",
    [
        ({**TINY, "_target_": "os.system"}, r"encoder"),
        ({**TINY, "widht": 4}, r"encoder\.widht"),
        ({**TINY, "width": "wide"}, r"encoder\.width='wide': must be an integer"),
        ({"width": 4}, r"encoder"),
        ("vgg_tiny", r"^encoder must be a mapping with a _target_"),
    ],
)
def test_a_node_that_does_not_fit_is_one_line(node, message: str) -> None:
    with pytest.raises(CaptioningError, match=message) as info:
        EncoderSettings.from_config(node)
    assert "\n" not in str(info.value)


def test_a_decoder_node_may_not_set_what_the_library_passes() -> None:
    node = {"_target_": "captioning.models.decoder.RNNDecoder", "vocab_size": 10}
    with pytest.raises(CaptioningError, match=r"decoder\.vocab_size"):
        DecoderSettings.from_config(node)
