"""Training and evaluating on pre-extracted features (encoder=precomputed) as a user does: the
shapes region features extracted on first use, a short run, its checkpoint rebuilt,
tools/evaluate.py on it, and tools/caption.py refusing a raw image in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    assert_one_line_error,
    compose_train,
    fit,
    run_tool,
    tiny_checkpoint,
    tiny_model_config,
)

from captioning.checkpoint import load_checkpoint, restore_model
from captioning.errors import CaptioningError
from captioning.models.precomputed import TARGET as PRECOMPUTED
from captioning.training import Trainer

SHAPES = [
    "data.sizes.train=120",
    "data.sizes.val=20",
    "data.sizes.test=20",
    "data.seed=3",
    "decoder.embed_dim=16",
    "decoder.hidden_dim=32",
    "decoder.attention_dim=16",
    "trainer.progress=false",
    "trainer.epochs=1",
    "trainer.max_train_batches=3",
    "trainer.test_after_training=false",
    "trainer.tensorboard=false",
    "trainer.threads=1",
]


def region_cfg(shapes_root: Path, features: Path, *overrides: str):
    """experiment=shapes_updown with the attention decoder (conf/decoder/updown.yaml comes with
    the Up-Down decoder), its region features written under `features`."""
    return compose_train(
        f"data.root={shapes_root}",
        "experiment=shapes_updown",
        "decoder=attention",
        *SHAPES,
        *(f"data.features.{k}_dir={features / k}" for k in ("att", "fc", "box")),
        *overrides,
    )


@pytest.fixture(scope="module")
def region_run(shapes_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("region_run")
    summary = fit(region_cfg(shapes_root, base / "regions"), run_dir=base / "run")
    assert summary["interrupted"] is None
    return base


def test_a_precomputed_run_extracts_the_features_trains_and_validates(region_run: Path) -> None:
    assert (region_run / "regions" / "att" / "extracted.json").is_file()  # written on first use
    rows = (region_run / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and "val_CIDEr" in rows[0]


def test_its_checkpoint_stores_the_feature_sizes_and_rebuilds_the_model(region_run) -> None:
    ckpt = load_checkpoint(region_run / "run")
    encoder = ckpt["config"]["encoder"]
    assert encoder["_target_"] == PRECOMPUTED
    assert (encoder["vector_dim"], encoder["grid_dim"]) == (147, 152)  # 3x7x7, + 5 box features
    model, _ = restore_model(ckpt)
    assert not list(model.encoder.parameters())
    with pytest.raises(CaptioningError, match="cannot encode an image"):
        model.encode(None)


@pytest.mark.slow
def test_tools_evaluate_scores_the_checkpoint_from_the_feature_files(region_run: Path) -> None:
    out = region_run / "scores.json"
    done = run_tool(
        "evaluate.py",
        "--checkpoint",
        region_run / "run",
        "--split",
        "test",
        "--out",
        out,
        "--device",
        "cpu",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    scores = json.loads(out.read_text())
    assert scores["num_images"] == 20 and scores["CIDEr"] >= 0


@pytest.mark.slow
def test_tools_caption_of_a_raw_image_says_in_one_line_what_to_do(region_run, shapes_root):
    image = next((shapes_root / "images" / "test").glob("*.png"))
    done = run_tool("caption.py", "--checkpoint", region_run / "run", image, "--device", "cpu")
    assert_one_line_error(done, "pre-extracted region features", "--features", "tools/evaluate.py")


def precomputed_checkpoint(path: Path, dim: int = 6) -> Path:
    """A tiny attention model over `dim`-d pre-extracted features (no box features)."""
    config = tiny_model_config(decoder="attention", attention_dim=8, max_len=5)
    config["encoder"] = {"_target_": PRECOMPUTED, "vector_dim": dim, "grid_dim": dim}
    return tiny_checkpoint(path, config)


def test_tools_caption_captions_feature_files_and_names_a_bad_one(tmp_path: Path) -> None:
    ckpt = precomputed_checkpoint(tmp_path / "ckpt.pt")
    att = tmp_path / "att"
    att.mkdir()
    for name, k in (("11", 1), ("12", 3)):
        np.savez(att / f"{name}.npz", feat=np.random.default_rng(0).random((k, 6), np.float32))
    np.savez(att / "13.npz", feat=np.zeros((2, 5), np.float32))  # regions of the wrong size
    done = run_tool("caption.py", "--checkpoint", ckpt, "--features", att, "--device", "cpu")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(att / "11.npz"), str(att / "12.npz")]
    assert all(len(line.split("\t")) == 2 for line in lines)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(att / "13.npz") in errors[0] and "expected 6" in errors[0]
    on_images = run_tool("caption.py", "--checkpoint", ckpt, tmp_path / "x.png", "--device", "cpu")
    assert_one_line_error(on_images, "cannot encode an image", "--features")


def test_captioner_generates_from_a_padded_feature_batch(tmp_path: Path) -> None:
    from captioning import Captioner
    from captioning.contracts import EncoderOutput
    from captioning.data.loader import stack_features

    captioner = Captioner.from_checkpoint(precomputed_checkpoint(tmp_path / "c.pt"), device="cpu")
    rows = [EncoderOutput(torch.ones(6), torch.ones(k, 6)) for k in (1, 3)]
    batch = stack_features(rows)
    assert batch.mask is not None
    assert captioner.generate(batch).sequences.shape[:2] == (2, 1)


def test_features_without_the_precomputed_encoder_are_refused(shapes_root, tmp_path) -> None:
    cfg = compose_train(f"data.root={shapes_root}", f"data.features.att_dir={tmp_path}")
    with pytest.raises(CaptioningError, match="read only by encoder=precomputed"):
        Trainer.from_config(cfg)
    cfg = compose_train(f"data.root={shapes_root}", "encoder=precomputed")
    with pytest.raises(CaptioningError, match=r"encoder=precomputed needs data\.features\.att_dir"):
        Trainer.from_config(cfg)
