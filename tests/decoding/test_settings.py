"""The one decoding-settings type (captioning.decoding.settings)."""

import re

import pytest
from helpers import ROOT, decoder_features, make_decoder

from captioning.decoding import DecodingSettings, generate
from captioning.errors import CaptioningError

BAD_SETTINGS = {
    "beam_size=0: must be >= 1": dict(beam_size=0),
    "max_len=0: must be >= 1": dict(max_len=0),
    "no_repeat_ngram_size=-1: must be >= 0 (0 = off)": dict(no_repeat_ngram_size=-1),
    "n_best=0: must be >= 1": dict(n_best=0),
    "temperature=-0.5: must be >= 0.0 (0 = greedy)": dict(temperature=-0.5),
    "top_k=0: must be >= 1": dict(top_k=0),
    "num_samples=0: must be >= 1": dict(num_samples=0),
    "n_best=3 must be <= beam_size=2": dict(beam_size=2, n_best=3),
    "use beam_size=1 and n_best=1 with sample=True": dict(sample=True, beam_size=3),
    "num_samples=2 needs sample=True": dict(num_samples=2),
}


@pytest.mark.parametrize("message", list(BAD_SETTINGS))
def test_decoding_settings_checks_are_one_line_errors(message):
    """Each bad value is one CaptioningError line naming it, whether the settings are built
    directly, replaced or passed to generate() as keywords."""
    kw = BAD_SETTINGS[message]
    dec, feats = make_decoder("gru-every_step"), decoder_features(2)
    for attempt in (
        lambda: DecodingSettings(**kw).checked(),
        lambda: DecodingSettings().replace(**kw).checked(),
        lambda: generate(dec, feats, **kw),
    ):
        with pytest.raises(CaptioningError) as info:
            attempt()
        assert message in str(info.value) and "\n" not in str(info.value)
    key = re.search(r"\w+=", message).group()  # the first key the message names
    with pytest.raises(CaptioningError, match=rf"decoding\.{key}"):
        DecodingSettings(**kw).checked("decoding")  # in a config: the dotted key


def test_decoding_settings_replace_to_dict_and_old_mappings():
    settings = DecodingSettings(beam_size=3, n_best=2)
    assert settings.replace(max_len=5) == DecodingSettings(beam_size=3, n_best=2, max_len=5)
    assert settings.replace() is settings and settings.beam_size == 3  # frozen, unchanged
    assert DecodingSettings.from_mapping(settings.to_dict()) == settings
    old = DecodingSettings.from_mapping({"max_len": 6})  # an older checkpoint's few keys
    assert old == DecodingSettings(max_len=6)
    with pytest.raises(CaptioningError, match=r"decoding.beem_size .*did you mean beam_size"):
        settings.replace(beem_size=2)
    with pytest.raises(CaptioningError, match=r"sample='yes': must be true or false"):
        settings.replace(sample="yes")
    with pytest.raises(CaptioningError, match=r"decoding.max_len=0: must be >= 1"):
        DecodingSettings.from_mapping({"max_len": 0}, "decoding")


def test_run_config_decoding_is_the_settings_and_n_best_is_checked():
    from hydra import compose, initialize_config_dir

    from captioning.training.config import parse_config

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        good = compose(config_name="train", overrides=["decoding=beam"])
        bad = compose(config_name="train", overrides=["decoding=greedy", "decoding.n_best=3"])
    assert parse_config(good).decoding == DecodingSettings(beam_size=3)
    with pytest.raises(CaptioningError) as info:
        parse_config(bad)
    assert str(info.value) == "decoding.n_best=3 must be <= decoding.beam_size=1"
