import pytest
import torch
from helpers import evil_checkpoint

from captioning.checkpoint import (
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from captioning.inference import Captioner
from captioning.models.caption_model import build_model
from captioning.vocab import Vocabulary

CONFIG = {
    "encoder": {
        "_target_": "captioning.models.encoder.vgg_tiny",
        "width": 8,
        "image_size": 32,
        "vector_dim": 16,
    },
    "decoder": {
        "_target_": "captioning.models.decoder.RNNDecoder",
        "cell": "lstm",
        "embed_dim": 8,
        "hidden_dim": 16,
    },
    "decoding": {"max_len": 6},
}
VOCAB = Vocabulary.build(["a red circle", "a blue square", "a green triangle"])


def saved(tmp_path, name="ck.pt"):
    torch.manual_seed(0)
    model = build_model(CONFIG, vocab_size=len(VOCAB))
    path = save_checkpoint(
        tmp_path / name,
        model=model.state_dict(),
        config=CONFIG,
        vocab=VOCAB.to_list(),
        epoch=3,
        step=42,
        metrics={"Bleu_4": 0.5},
        rng=get_rng_state(),
    )
    return model, path


def test_round_trip_plain_data_and_identical_captions(tmp_path, shapes_root):
    model, path = saved(tmp_path)
    ckpt = torch.load(path, weights_only=True)  # plain data: the safe loader reads it
    assert ckpt["epoch"] == 3 and ckpt["step"] == 42 and ckpt["vocab"] == VOCAB.to_list()
    images = sorted((shapes_root / "images" / "val").glob("*.png"))[:4]
    direct = Captioner(model, VOCAB, device="cpu", decoding={"max_len": 6}).caption(images)
    loaded = Captioner.from_checkpoint(path, device="cpu").caption(images)
    assert loaded == direct
    assert not list(tmp_path.glob("*.tmp"))  # nothing left behind by the atomic write


def _draws() -> tuple:
    import random

    import numpy as np

    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    """Python's, NumPy's and torch's generators continue after a save/load exactly as after the
    moment they were saved."""
    state = get_rng_state()
    expected = _draws()
    path = save_checkpoint(
        tmp_path / "rng.pt", model={}, config={}, vocab=["<pad>"], epoch=0, step=0, rng=state
    )
    _draws(), _draws()  # move every generator on
    set_rng_state(load_checkpoint(path)["rng"])
    assert _draws() == expected
    assert _draws() != expected  # (the draws do move on)


def test_refuses_pickled_objects_and_runs_none_of_them(tmp_path):
    marker = tmp_path / "pwned"
    path = evil_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(path)
    assert not marker.exists()


def test_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a captioning checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    _, path = saved(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    torch.save({**ckpt, "format_version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({**ckpt, "vocab": ckpt["vocab"] + ["extra"]}, tmp_path / "vocab.pt")
    with pytest.raises(CheckpointError, match="vocabulary"):
        Captioner.from_checkpoint(tmp_path / "vocab.pt")


def test_config_targets_outside_the_library_are_refused(tmp_path):
    _, path = saved(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"] = {**CONFIG, "encoder": {"_target_": "os.system", "command": "touch x"}}
    torch.save(ckpt, tmp_path / "target.pt")
    with pytest.raises(CheckpointError.__mro__[1], match="not allowed"):
        Captioner.from_checkpoint(tmp_path / "target.pt")


def test_checkpoints_get_the_permissions_of_any_new_file(tmp_path):
    """Written through a temporary file (0600 by default), a checkpoint still ends up with the
    mode the user's umask gives new files, as torch.save's own files do."""
    import os

    for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(mask)
        try:
            _, path = saved(tmp_path, f"ck{mask:o}.pt")
        finally:
            os.umask(old)
        assert path.stat().st_mode & 0o777 == mode, oct(path.stat().st_mode)
