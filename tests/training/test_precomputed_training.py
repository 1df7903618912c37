"""Training and evaluating on pre-extracted features (encoder=precomputed) as a user does: the
shapes region features extracted on first use, a short run, its checkpoint rebuilt,
tools/evaluate.py on it, and tools/caption.py refusing a raw image in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import assert_one_line_error, compose_train, fit, run_tool

from captioning.checkpoint import load_checkpoint, restore_model
from captioning.errors import CaptioningError
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
    assert encoder["_target_"] == "captioning.models.precomputed.precomputed"
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
    assert_one_line_error(done, "pre-extracted region features", "tools/evaluate.py")


def test_features_without_the_precomputed_encoder_are_refused(shapes_root, tmp_path) -> None:
    cfg = compose_train(f"data.root={shapes_root}", f"data.features.att_dir={tmp_path}")
    with pytest.raises(CaptioningError, match="read only by encoder=precomputed"):
        Trainer.from_config(cfg)
    cfg = compose_train(f"data.root={shapes_root}", "encoder=precomputed")
    with pytest.raises(CaptioningError, match=r"encoder=precomputed needs data\.features\.att_dir"):
        Trainer.from_config(cfg)
