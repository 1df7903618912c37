"""The error type (captioning.errors): messages that name settings as each reader knows them."""

import pickle

from captioning.errors import NAME_ONLY, CaptioningError


def shout(key: str, value: object) -> str:
    return key.upper() if value is NAME_ONLY else f"<{key.upper()}:{value}>"


def test_a_settings_message_reads_as_the_library_writes_it_or_as_a_front_end_names_them():
    error = CaptioningError(
        "{n_best} must be <= {beam_size}: raise {beam_size:name}, use {sample=False}; {x} {",
        settings={"n_best": 5, "beam_size": 1, "sample": True},
    )
    assert str(error) == "n_best=5 must be <= beam_size=1: raise beam_size, use sample=False; {x} {"
    assert error.named(shout) == (
        "<N_BEST:5> must be <= <BEAM_SIZE:1>: raise BEAM_SIZE, use <SAMPLE:False>; {x} {"
    )
    in_config = CaptioningError("{top_k}: bad", settings={"top_k": 0}, prefix="decoding.")
    assert str(in_config) == "decoding.top_k=0: bad"
    assert in_config.named(shout) == "<DECODING.TOP_K:0>: bad"  # a front end sees the full key
    assert str(pickle.loads(pickle.dumps(error))) == str(error)  # (from a loader worker)


def test_a_plain_message_is_left_as_it_is():
    error = CaptioningError("no file {beam_size} here")
    assert str(error) == error.named(shout) == "no file {beam_size} here"
