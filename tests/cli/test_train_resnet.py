"""A ResNet encoder through the tools as a user runs them: train (feature cache), caption with an
attention map, evaluate; and the ResNet-101 presets pinned to the tutorial's settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import assert_one_line_error, compose_train, run_tool, write_image

from captioning.checkpoint import load_checkpoint, restore_model
from captioning.training.config import parse_config

# a random-weight ResNet-50 at 32 px (1x1 layer4, pooled to 2x2: 4 regions of 2048), a small
# attention decoder, 3 batches of 8 images, one epoch
RUN = [
    "data.sizes.train=40",
    "data.sizes.val=8",
    "data.sizes.test=8",
    "data.min_count=1",
    "encoder=resnet50",
    "encoder.weights=null",
    "encoder.image_size=32",
    "encoder.grid_size=2",
    "decoder=attention",
    "decoder.embed_dim=16",
    "decoder.hidden_dim=32",
    "decoder.attention_dim=16",
    "decoding.max_len=5",
    "trainer.batch_size=8",
    "trainer.eval_batch_size=8",
    "trainer.max_train_batches=3",
    "trainer.epochs=1",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "trainer.threads=1",
]


@pytest.mark.slow  # three processes each build a ResNet-50: 293 s on the shared 2-core machine (load 16)
def test_resnet50_trains_captions_and_evaluates(shapes_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cache = tmp_path / "cache"
    args = [*RUN, f"data.root={shapes_root}", f"data.cache_dir={cache}", f"hydra.run.dir={run}"]
    done = run_tool("train.py", *args, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(cache.iterdir())) == 1  # frozen encoder: its features were cached once
    model, _ = restore_model(load_checkpoint(run))
    assert model.encoder.num_regions == 4 and model.decoder.attention.grid_proj.in_features == 2048

    image = tmp_path / "red.png"
    write_image(image, shade=200)
    attention = tmp_path / "attention.png"
    done = run_tool("caption.py", "-c", run, image, "--attention-map", attention, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(str(image)) and attention.stat().st_size > 0

    results = tmp_path / "test_results.json"
    done = run_tool("evaluate.py", "-c", run, "--split", "test", "--results", results, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "decoded 8 images of split 'test', each once" in done.stdout
    assert len(json.loads(results.read_text())) == 8


def test_sat_resnet101_preset_has_the_tutorials_settings() -> None:
    run = parse_config(compose_train("experiment=sat_resnet101"))
    assert run.encoder.node == {
        "_target_": "captioning.models.resnet.resnet101",
        "weights": "IMAGENET1K_V1",  # torchvision's pretrained=True
        "grid_size": 14,
        "image_size": 256,
        "crop": False,
        "trainable": True,
        "fine_tune_from": 2,  # layer2..layer4
    }
    decoder = run.decoder.node
    assert decoder["_target_"].endswith("AttentionDecoder") and decoder["cell"] == "lstm"
    sizes = (decoder["embed_dim"], decoder["hidden_dim"], decoder["attention_dim"])
    assert sizes == (512, 512, 512) and (decoder["dropout"], decoder["alpha_c"]) == (0.5, 1.0)
    assert (run.optim.name, run.optim.lr, run.optim.encoder_lr) == ("adam", 4e-4, 1e-4)
    assert (run.optim.grad_clip, run.optim.finetune_encoder_after) == (5.0, 13)
    assert (run.trainer.monitor, run.trainer.early_stop_patience) == ("Bleu_4", 20)
    assert run.data.name == "coco_karpathy" and run.decoding.beam_size == 3


def test_show_tell_resnet101_preset_feeds_the_vector_once() -> None:
    run = parse_config(compose_train("experiment=show_tell_resnet101"))
    assert run.encoder.target == "captioning.models.resnet.resnet101"
    assert run.encoder.node["weights"] == "DEFAULT" and not run.encoder.trainable
    assert run.decoder.node["image_injection"] == "first_input"
    assert run.decoding.beam_size == 5 and run.data.name == "coco_karpathy"


def test_unknown_backbone_is_one_error_line(shapes_root: Path, tmp_path: Path) -> None:
    done = run_tool(
        "train.py",
        "encoder=backbone",
        "encoder.arch=convnext_tiy",
        f"data.root={shapes_root}",
        "data.sizes.train=8",
        "data.sizes.val=4",
        "data.sizes.test=4",
        "trainer.progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_line_error(done, "encoder.arch='convnext_tiy'", "close names: convnext_tiny")
