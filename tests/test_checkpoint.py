"""Tests for captioning.checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import (
    ROOT,
    assert_one_line_error,
    evil_checkpoint,
    run_tool,
    tiny_checkpoint,
    tiny_model_config,
)
from PIL import Image

from captioning.checkpoint import (
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from captioning.errors import CaptioningError
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


TINY_MODEL = tiny_model_config(cell="gru", max_len=5)


WRITER = """
import sys, torch
from captioning.checkpoint import save_checkpoint
path, = sys.argv[1:]
big = {f"w{i}": torch.randn(256, 256) for i in range(64)}   # ~16 MB: the write takes a while
print("ready", flush=True)
step = 1
while True:
    save_checkpoint(path, model=big, config={"step": step}, vocab=["<pad>"], epoch=step, step=step)
    step += 1
"""


@pytest.mark.slow
def test_sigkill_while_saving_leaves_a_readable_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for delay in (0.3, 0.7, 1.1, 1.6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        while not path.exists():
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = load_checkpoint(path)  # the previous complete checkpoint, never a torn one
        assert ckpt["config"]["step"] == ckpt["step"] and len(ckpt["model"]) == 64
        assert torch.isfinite(ckpt["model"]["w0"]).all()


def test_every_torch_load_is_weights_only_and_every_save_is_atomic():
    """Static check of the library and the tools: ``torch.load(..., weights_only=True)`` only,
    and ``torch.save`` only inside ``save_checkpoint`` (temporary file + rename)."""
    import ast

    loads, saves = [], []
    for path in sorted([*(ROOT / "captioning").rglob("*.py"), *(ROOT / "tools").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                if not (isinstance(owner, ast.Name) and owner.id == "torch"):
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                if node.func.attr == "load":
                    safe = any(
                        k.arg == "weights_only"
                        and isinstance(k.value, ast.Constant)
                        and k.value.value is True
                        for k in node.keywords
                    )
                    loads.append((where, safe))
                elif node.func.attr == "save":
                    saves.append(where)
    assert loads and all(safe for _, safe in loads), loads
    assert [s.split(":")[0] for s in saves] == ["captioning/checkpoint.py"], saves


def test_pickled_checkpoints_are_refused_by_the_captioner(tmp_path):
    from captioning.checkpoint import CheckpointError
    from captioning.inference import Captioner

    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(
        CheckpointError, match=r"refused to load .*evil\.pt: .*pickled Python object"
    ):
        Captioner.from_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.slow
def test_pickled_checkpoints_are_refused_by_the_tools(tmp_path):
    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.pt", marker)
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    for tool, args in [
        ("caption.py", ["--checkpoint", evil, image]),
        ("evaluate.py", ["--checkpoint", evil]),
    ]:
        assert_one_line_error(run_tool(tool, *args), "refused to load", "evil.pt")
    assert not marker.exists()


def test_checkpoints_that_do_not_fit_say_what_differs(tmp_path):
    from captioning.checkpoint import CheckpointError, load_checkpoint, restore_model
    from captioning.inference import Captioner

    ckpt = load_checkpoint(tiny_checkpoint(tmp_path / "ck.pt"))
    cases = [
        (
            {**ckpt, "vocab": [*ckpt["vocab"], "extra"]},
            r"decoder weights \(decoder\.embed\.weight\) are for 11 words but its vocabulary has 12",
        ),
        (
            {
                **ckpt,
                "config": {
                    **ckpt["config"],
                    "decoder": {**ckpt["config"]["decoder"], "hidden_dim": 16},
                },
            },
            r"do not fit the model its config describes: wrong shapes decoder\.",
        ),
        (
            {
                **ckpt,
                "config": {
                    **ckpt["config"],
                    "decoder": {**ckpt["config"]["decoder"], "cell": "lstm"},
                },
            },
            r"wrong shapes decoder\.rnn\.weight_ih_l0 \(24, 16\) \(model \(32, 16\)\)",
        ),
        (
            {**ckpt, "model": {k: v for k, v in ckpt["model"].items() if "rnn" not in k}},
            r"missing weights decoder\.rnn",
        ),
        (
            {**ckpt, "config": {**ckpt["config"], "encoder": {"_target_": "os.system"}}},
            "not allowed",
        ),
    ]
    for k, (broken, message) in enumerate(cases):
        with pytest.raises(CaptioningError, match=message):
            restore_model(broken, source="ck.pt")
        torch.save(broken, tmp_path / f"broken{k}.pt")
        with pytest.raises(CaptioningError, match=message):
            Captioner.from_checkpoint(tmp_path / f"broken{k}.pt")
    torch.save({**ckpt, "model": [1, 2]}, tmp_path / "types.pt")
    with pytest.raises(CheckpointError, match="model have the wrong type"):
        load_checkpoint(tmp_path / "types.pt")
    torch.save({**ckpt, "format_version": 2}, tmp_path / "v2.pt")
    with pytest.raises(CheckpointError, match=r"format_version 2.*reads format_version 1"):
        Captioner.from_checkpoint(tmp_path / "v2.pt")


def test_a_checkpoint_loads_without_its_pretrained_weights_file(tmp_path):
    """The checkpoint holds every weight: the encoder's pretrained-weights file named in its
    config (on the machine that trained it) is not needed to load it."""
    from captioning.checkpoint import load_checkpoint, restore_model
    from captioning.models.encoder import vgg_tiny

    torch.manual_seed(1)
    weights = tmp_path / "pretrained.pt"
    torch.save(vgg_tiny(width=4, image_size=16, vector_dim=8).state_dict(), weights)
    config = {**TINY_MODEL, "encoder": {**TINY_MODEL["encoder"], "weights": str(weights)}}
    path = tiny_checkpoint(tmp_path / "ck.pt", config)
    weights.unlink()  # another machine
    model, _ = restore_model(load_checkpoint(path))
    assert torch.equal(
        model.state_dict()["decoder.out.weight"],
        load_checkpoint(path)["model"]["decoder.out.weight"],
    )


def test_offline_torchvision_weights_are_a_one_line_error(tmp_path, monkeypatch):
    """A checkpoint of a torchvision VGG names its pretrained weights; where they are neither
    cached nor downloadable the error says so (the download is faked: tests stay offline)."""
    import urllib.error

    from torchvision.models._api import WeightsEnum

    from captioning.checkpoint import CheckpointError, restore_model

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    ckpt = {
        "config": {
            **TINY_MODEL,
            "encoder": {
                "_target_": "captioning.models.encoder.vgg11",
                "weights": "DEFAULT",
                "image_size": 32,
            },
        },
        "vocab": ["<pad>", "<start>", "<end>", "<unk>"],
        "model": {},
    }
    with pytest.raises(CheckpointError, match=r"needs torchvision's DEFAULT weights .*\(URLError"):
        restore_model(ckpt, source="vgg.pt")


def test_a_folder_passed_as_a_checkpoint_says_what_it_holds_and_what_to_pass(tmp_path):
    """issue 23: ``-c outputs/demo/checkpoints`` said "checkpoint not found"."""
    run = tmp_path / "demo"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("best.pt", "last.pt"):
        tiny_checkpoint(run / "checkpoints" / name)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(run / "checkpoints")
    assert str(info.value) == (
        f"{run / 'checkpoints'} is a folder of checkpoints (best.pt, last.pt); pass one of them "
        f"or the run folder {run}"
    )
    assert load_checkpoint(run)["epoch"] == 1  # what it says to pass works
    with pytest.raises(CheckpointError, match=r"holds runs \(demo\); pass one of them, e\.g\. "):
        load_checkpoint(tmp_path)  # the outputs folder above the runs
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty holds no checkpoint .* or a run folder$"):
        load_checkpoint(tmp_path / "empty")
