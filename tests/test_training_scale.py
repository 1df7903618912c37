"""COCO-scale training: data configs and Karpathy splits, schedules, scheduled sampling, label
smoothing, mixed-precision plumbing, fine-tuning, exact resume and signal handling."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SMALL, TINY, compose_train, fit, run_tool, small_cfg, tiny_model_config
from PIL import Image

from captioning.checkpoint import load_checkpoint, save_checkpoint
from captioning.contracts import EncoderOutput
from captioning.data.karpathy import load_karpathy
from captioning.data.loader import CaptionBatch
from captioning.data.splits import load_split
from captioning.devices import autocast_dtype
from captioning.errors import CaptioningError
from captioning.models.caption_model import build_model
from captioning.models.decoder import RNNDecoder
from captioning.training import TrainLoop, parse_config
from captioning.training.objectives import (
    caption_cross_entropy,
    sampled_forward,
    sampling_probability,
)
from captioning.training.optim import build_optimizer, build_scheduler, lr_factor
from captioning.training.resume import load_resume, resume_source
from captioning.training.run_log import read_metrics_csv

ROOT = Path(__file__).resolve().parents[1]
compose_cfg = compose_train
tiny_cfg = small_cfg


def weights(run: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / name)["model"]


# -- data: COCO 2014 layout and Karpathy's split file ---------------------------------------------


def write_karpathy(root: Path) -> Path:
    """A miniature dataset_coco.json with images under train2014/ and val2014/."""
    images, rng = [], np.random.default_rng(0)
    layout = [
        ("train", "train2014"),
        ("train", "train2014"),
        ("restval", "val2014"),
        ("val", "val2014"),
        ("test", "val2014"),
        ("test", "val2014"),
    ]
    for k, (split, folder) in enumerate(layout):
        name = f"COCO_{folder}_{k:012d}.jpg"
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
            root / folder / name
        )
        sentences = [
            {"raw": f"A photo number {k} of a red thing. ", "tokens": ["x"]},
            {"raw": f"a red thing {k}", "tokens": ["x"]},
            {"raw": " ?! ", "tokens": []},
        ]
        images.append(
            {
                "filepath": folder,
                "filename": name,
                "imgid": k,
                "split": split,
                "cocoid": 1000 - k,
                "sentids": [],
                "sentences": sentences,
            }
        )
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def test_karpathy_split_file_is_read_into_records(tmp_path):
    path = write_karpathy(tmp_path)
    train = load_karpathy(path, tmp_path, ["train", "restval"])
    assert [r.image_id for r in train] == [998, 999, 1000]  # cocoid, sorted
    assert train[0].path == tmp_path / "val2014" / "COCO_val2014_000000000002.jpg"
    assert train[2].captions == (
        "A photo number 0 of a red thing.",
        "a red thing 0",
    )  # raw, stripped
    assert [r.image_id for r in load_karpathy(path, tmp_path, ["test"])] == [995, 996]
    with pytest.raises(CaptioningError, match=r"no split.*'restvall'"):
        load_karpathy(path, tmp_path, ["restvall"])
    (tmp_path / "train2014" / "COCO_train2014_000000000001.jpg").unlink()
    with pytest.raises(CaptioningError, match="missing"):
        load_karpathy(path, tmp_path, ["train"])
    assert [r.image_id for r in load_karpathy(path, tmp_path, ["train"], strict=False)] == [1000]


def test_coco_karpathy_config_gives_the_paper_splits(tmp_path):
    write_karpathy(tmp_path)
    cfg = compose_cfg("data=coco_karpathy", f"data.root={tmp_path}")
    assert cfg.data.max_len == 16 and cfg.data.min_count == 5
    sizes = {split: len(load_split(cfg.data, split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 3, "val": 1, "test": 2}


def test_coco_config_reads_the_2014_files(tmp_path):
    for split, start in (("train", 1), ("val", 100)):
        folder = tmp_path / f"{split}2014"
        folder.mkdir()
        images, anns = [], []
        for k in range(3):
            name = f"COCO_{split}2014_{start + k:012d}.jpg"
            Image.new("RGB", (20, 20), (k * 80, 0, 0)).save(folder / name)
            images.append({"id": start + k, "file_name": name})
            anns.append({"id": start + k, "image_id": start + k, "caption": f"a red box {k}"})
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / f"captions_{split}2014.json").write_text(
            json.dumps({"images": images, "annotations": anns})
        )
    cfg = compose_cfg("data=coco", f"data.root={tmp_path}")
    assert cfg.data.max_len == 16 and cfg.data.min_count == 5
    assert [r.image_id for r in load_split(cfg.data, "train")] == [1, 2, 3]
    assert load_split(cfg.data, "test") == load_split(cfg.data, "val")  # val2014 doubles as test


@pytest.mark.slow
def test_training_runs_on_karpathy_format_data(tmp_path):
    write_karpathy(tmp_path / "coco")
    cfg = compose_cfg(
        "data=coco_karpathy",
        f"data.root={tmp_path / 'coco'}",
        "data.min_count=1",
        "encoder.width=8",
        "encoder.vector_dim=16",
        "encoder.image_size=16",
        "decoder.embed_dim=8",
        "decoder.hidden_dim=16",
        "trainer.epochs=1",
        "trainer.progress=false",
        "trainer.tensorboard=false",
        "trainer.threads=1",
    )
    summary = fit(cfg, run_dir=tmp_path / "run")
    assert summary["history"][0]["val_num_images"] == 1 and summary["test"]["num_images"] == 2


# -- schedules ----------------------------------------------------------------------------------------


def test_lr_factor_formulas():
    assert [lr_factor(s, warmup_steps=4) for s in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    assert [lr_factor(s, schedule="step", step_size=3, gamma=0.5) for s in (0, 2, 3, 6, 9)] == [
        1,
        1,
        0.5,
        0.25,
        0.125,
    ]
    cos = [lr_factor(s, schedule="cosine", warmup_steps=2, total_steps=12) for s in range(13)]
    assert cos[:2] == [0.5, 1.0]
    for s in range(2, 13):
        assert cos[s] == pytest.approx(0.5 * (1 + math.cos(math.pi * (s - 2) / 10)))
    assert cos[12] == pytest.approx(0.0)
    with pytest.raises(CaptioningError, match="schedule"):
        lr_factor(0, schedule="linear")


def test_flickr8k_show_attend_tell_preset_uses_rmsprop_as_the_paper():
    cfg = parse_config(compose_cfg("experiment=sat_vgg16_flickr8k"))
    assert cfg.data.name == "flickr8k" and cfg.optim.name == "rmsprop"
    assert parse_config(compose_cfg("experiment=sat_vgg16_flickr30k")).optim.name == "adam"
    model = build_model(_model_config(), vocab_size=20)
    optimizer = build_optimizer(model, name="rmsprop", lr=1e-4)
    assert isinstance(optimizer, torch.optim.RMSprop)


def test_scheduler_steps_both_groups_and_encoder_has_its_own_lr():
    model = build_model(_model_config(), vocab_size=20)
    opt = build_optimizer(model, lr=1e-2, encoder_lr=1e-4)
    assert [g["name"] for g in opt.param_groups] == ["decoder", "encoder"]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    sched = build_scheduler(
        opt, schedule="step", step_size_epochs=2, gamma=0.1, steps_per_epoch=3, epochs=10
    )
    lrs = []
    for _ in range(7):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[5] == pytest.approx([1e-2, 1e-4]) and lrs[6] == pytest.approx([1e-3, 1e-5])


def test_scheduled_sampling_ramp():
    ramp = {"start_epoch": 3, "increase_every": 2, "increase_prob": 0.1, "max_prob": 0.25}
    probs = [sampling_probability(e, **ramp) for e in range(1, 10)]
    assert probs == pytest.approx([0, 0, 0.1, 0.1, 0.2, 0.2, 0.25, 0.25, 0.25])
    assert sampling_probability(50) == 0.0  # off by default


# -- the objective: scheduled sampling, label smoothing ----------------------------------------------


def _model_config(**decoder):
    return tiny_model_config(embed_dim=6, hidden_dim=10, dropout=0.0, **decoder)


def _captions(b: int = 5, t: int = 7, v: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, t + 1, (b,), generator=g)
    captions = torch.randint(4, v, (b, t), generator=g)
    captions[:, 0] = 1
    for i, n in enumerate(lengths.tolist()):
        captions[i, n - 1], captions[i, n:] = 2, 0
    return captions, lengths


def _decoder(kind: str) -> torch.nn.Module:
    if kind == "attention":
        from captioning.models.attention_decoder import AttentionDecoder

        return AttentionDecoder(
            vocab_size=20, grid_dim=3, embed_dim=6, hidden_dim=10, attention_dim=5, dropout=0.0
        )
    cell, injection = kind.split("-")
    return RNNDecoder(
        vocab_size=20,
        vector_dim=8,
        cell=cell,
        embed_dim=6,
        hidden_dim=10,
        image_injection=injection,
    )


@pytest.mark.parametrize(
    "kind", ["lstm-every_step", "gru-init_state", "rnn-first_input", "attention"]
)
def test_scheduled_sampling_at_zero_is_teacher_forcing(kind):
    torch.manual_seed(0)
    decoder = _decoder(kind)
    features = EncoderOutput(torch.randn(5, 8), torch.randn(5, 4, 3))
    captions, lengths = _captions()
    inputs, targets = captions[:, :-1], captions[:, 1:]

    def loss_and_grads(logits):
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=0)
        grads = torch.autograd.grad(loss, list(decoder.parameters()))
        return loss, grads

    fused, fused_grads = loss_and_grads(decoder(features, inputs, lengths - 1))
    stepped, _ = sampled_forward(decoder, features, inputs, 0.0)
    step_loss, step_grads = loss_and_grads(stepped)
    torch.testing.assert_close(step_loss, fused, rtol=1e-5, atol=1e-6)
    for a, b in zip(step_grads, fused_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_scheduled_sampling_at_one_feeds_only_the_models_words():
    torch.manual_seed(0)
    decoder = RNNDecoder(vocab_size=20, vector_dim=8, embed_dim=6, hidden_dim=10)
    features = EncoderOutput(torch.randn(5, 8), torch.randn(5, 4, 3))
    captions, _ = _captions()
    other = captions.clone()
    other[:, 1:] = (other[:, 1:] + 5) % 20  # different reference words after <start>
    outs = []
    for inputs in (captions[:, :-1], other[:, :-1]):
        torch.manual_seed(7)
        outs.append(sampled_forward(decoder, features, inputs, 1.0)[0])
    torch.testing.assert_close(outs[0], outs[1])  # the references were never fed
    torch.manual_seed(7)
    half, _ = sampled_forward(decoder, features, captions[:, :-1], 0.5)
    assert not torch.allclose(half, outs[0])


def test_objective_label_smoothing_and_sampling_run_through_the_model():
    torch.manual_seed(0)
    model = build_model(_model_config(), vocab_size=20).eval()  # no dropout
    images = torch.randn(2, 3, 16, 16)
    captions, lengths = _captions(b=5)
    index = torch.tensor([0, 0, 1, 1, 1])
    eps = 0.1
    loss, words = caption_cross_entropy(
        model, images, captions, lengths, index, label_smoothing=eps
    )
    logp = model(images, captions[:, :-1], lengths - 1, index).log_softmax(-1)  # (B, T, V)
    mask = captions[:, 1:] != 0
    nll = -logp.gather(2, captions[:, 1:].unsqueeze(2)).squeeze(2)[mask]
    smooth = -logp.mean(-1)[mask]  # uniform target over the V words
    assert int(words) == int(mask.sum())
    torch.testing.assert_close(loss, ((1 - eps) * nll + eps * smooth).sum())
    features = model.encode(images)  # precomputed features give the same loss
    again, _ = caption_cross_entropy(model, features, captions, lengths, index, label_smoothing=eps)
    torch.testing.assert_close(again, loss)
    sampled, _ = caption_cross_entropy(model, images, captions, lengths, index, sample_prob=0.5)
    sampled.backward()
    assert all(p.grad is not None for p in model.decoder.parameters())


# -- mixed precision and devices ------------------------------------------------------------------


def test_bf16_autocast_and_grad_scaler_plumbing_run_on_cpu():
    torch.manual_seed(0)
    model = build_model(_model_config(), vocab_size=20)
    opt = build_optimizer(model, lr=1e-2)
    batches = []
    for seed in range(3):
        captions, lengths = _captions(b=4, seed=seed)
        batches.append(
            CaptionBatch(
                torch.randn(2, 3, 16, 16),
                captions,
                lengths,
                torch.tensor([1, 1, 2, 2]),
                torch.tensor([0, 0, 1, 1]),
            )
        )
    before = [p.detach().clone() for p in model.decoder.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    loop = TrainLoop(
        model,
        opt,
        device=torch.device("cpu"),
        autocast_dtype=torch.bfloat16,
        scaler=scaler,
        channels_last=True,
    )
    stats = loop.run_epoch(batches)
    assert stats.steps == 3 and math.isfinite(stats.loss) and stats.skipped == 0
    assert all(
        not torch.equal(a, b) for a, b in zip(before, model.decoder.parameters(), strict=True)
    )
    assert scaler.get_scale() == 2.0**8  # finite gradients: the scale is kept
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(CaptioningError, match="fp16 needs a CUDA"):
        autocast_dtype("fp16", cpu)


def _model_and_batches(n: int = 3):
    """A tiny model without dropout (its draws differ between eager and compiled code) and `n`
    batches of two images."""
    torch.manual_seed(0)
    model = build_model(_model_config(), vocab_size=20)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    batches = []
    for seed in range(n):
        captions, lengths = _captions(b=4, seed=seed)
        images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
        index = torch.tensor([0, 0, 1, 1])
        batches.append(CaptionBatch(images, captions, lengths, torch.tensor([1, 1, 2, 2]), index))
    return model, batches


def test_float16_autocast_with_a_cpu_grad_scaler_trains():
    """The float16 path of trainer.amp=fp16 (CUDA) runs on the CPU too: autocast in float16,
    the loss scaled, gradients unscaled before clipping, the scale kept while they are finite."""
    model, batches = _model_and_batches()
    before = [p.detach().clone() for p in model.decoder.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    loop = TrainLoop(
        model,
        build_optimizer(model, lr=1e-2),
        device=torch.device("cpu"),
        autocast_dtype=torch.float16,
        scaler=scaler,
        grad_clip=5.0,
    )
    stats = loop.run_epoch(batches)
    assert stats.steps == 3 and stats.nonfinite == 0 and math.isfinite(stats.loss)
    after = model.decoder.parameters()
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert scaler.get_scale() == 2.0**11  # two finite steps in a row: the scale grew once


def test_float16_overflow_skips_the_step_and_lowers_the_scale_without_stopping():
    """An overflowing loss scale gives non-finite gradients: the scaler skips the update and
    halves the scale; such steps do not count towards max_nonfinite_steps (overflow is normal
    there), so training continues once the scale is small enough."""
    model, batches = _model_and_batches(4)
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, growth_interval=1000)
    loop = TrainLoop(
        model,
        build_optimizer(model, lr=1e-2),
        device=torch.device("cpu"),
        autocast_dtype=torch.float16,
        scaler=scaler,
        max_nonfinite_steps=1,  # a non-finite *loss* would stop at once
    )
    first = loop.run_epoch(batches[:1])
    assert (first.steps, first.nonfinite, first.nonfinite_streak) == (0, 1, 0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert scaler.get_scale() == 2.0**39
    scaler.update(2.0**8)  # a workable scale: the next steps go through
    rest = loop.run_epoch(batches[1:])
    assert rest.steps == 3 and rest.nonfinite == 0


@pytest.mark.slow
def test_compiled_training_step_matches_eager():
    """trainer.compile=true (inductor, on the CPU here): the same losses and weights as eager."""
    from captioning.distributed import DistContext
    from captioning.training.loop import wrap_step
    from captioning.training.objectives import CrossEntropyObjective

    results = []
    for compile in (False, True):
        model, batches = _model_and_batches(2)
        objective = CrossEntropyObjective()
        step = wrap_step(model, objective, torch.device("cpu"), DistContext(), compile=compile)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loop = TrainLoop(
            model, optimizer, device=torch.device("cpu"), objective=objective, step=step
        )
        stats = loop.run_epoch(batches)
        results.append((stats.loss, [p.detach().clone() for p in model.parameters()]))
    (eager_loss, eager), (compiled_loss, compiled) = results
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_non_finite_gradients_skip_the_step():
    torch.manual_seed(0)
    model = build_model(_model_config(), vocab_size=20)
    opt = build_optimizer(model, lr=1e-2)
    captions, lengths = _captions(b=2)
    images = torch.full((2, 3, 16, 16), float("nan"))
    batch = CaptionBatch(images, captions, lengths, torch.tensor([1, 2]), torch.tensor([0, 1]))
    before = [p.detach().clone() for p in model.parameters()]
    stats = TrainLoop(model, opt, device=torch.device("cpu"), grad_clip=5.0).run_epoch([batch])
    assert stats.skipped == 1 and stats.steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_gpu_asked_for_without_one_is_a_one_line_error(tmp_path):
    assert compose_cfg("trainer=gpu").trainer.device == "cuda"
    missing = tmp_path / "not_generated"
    out = run_tool(
        "train.py",
        "trainer.device=cuda",
        f"data.root={missing}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error: trainer.device=cuda") and "Traceback" not in out.stderr
    assert not missing.exists()  # failed before any work


# -- fine-tuning --------------------------------------------------------------------------------------


def test_encoder_fine_tuning_starts_after_n_epochs(shapes_root, tmp_path):
    run = tmp_path / "run"
    args = (
        "encoder.trainable=true",
        "optim.finetune_encoder_after=1",
        "optim.encoder_lr=1e-3",
        "optim.lr=2e-3",
        "optim.schedule=none",
    )  # constant rates: the test reads them back
    fit(tiny_cfg(shapes_root, "trainer.epochs=1", *args), run_dir=run)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    torch.manual_seed(0)
    initial = build_model(ckpt["config"], vocab_size=len(ckpt["vocab"])).state_dict()
    for key, value in ckpt["model"].items():
        if key.startswith("encoder."):
            assert torch.equal(value, initial[key]), key  # frozen in epoch 1 (BN stats too)
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [2e-3, 1e-3]
    fit(tiny_cfg(shapes_root, "trainer.epochs=2", f"trainer.resume={run}", *args))
    tuned = weights(run)
    assert not torch.equal(tuned["encoder.features.0.weight"], initial["encoder.features.0.weight"])
    with pytest.raises(CaptioningError, match=r"needs encoder\.trainable=true"):
        fit(
            tiny_cfg(shapes_root, "encoder.trainable=false", "optim.finetune_encoder_after=1"),
            run_dir=tmp_path / "bad",
        )


# -- exact resume -------------------------------------------------------------------------------------


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_at_an_epoch_boundary_is_exact(shapes_root, tmp_path):
    # a 1-epoch run continued to 2 epochs equals a 2-epoch run only with a schedule that does not
    # depend on the total (cosine decays to zero at trainer.epochs): the mid-epoch test covers cosine
    const = "optim.schedule=none"
    full = fit(tiny_cfg(shapes_root, "trainer.epochs=2", const), run_dir=tmp_path / "full")
    run = tmp_path / "parts"
    fit(tiny_cfg(shapes_root, "trainer.epochs=1", const), run_dir=run)
    resumed = fit(
        tiny_cfg(shapes_root, "trainer.epochs=2", f"trainer.resume={run}", const),
        run_dir=tmp_path / "ignored",
    )
    assert resumed["run_dir"] == str(run)  # continues in the resumed run's directory
    assert_same_weights(weights(tmp_path / "full"), weights(run))
    rows, expected = (
        read_metrics_csv(run / "metrics.csv"),
        read_metrics_csv(tmp_path / "full" / "metrics.csv"),
    )
    assert [r["epoch"] for r in rows] == [1, 2]  # metrics.csv continued
    for a, b in zip(rows, expected, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_Bleu_4"] == b["val_Bleu_4"]
    assert resumed["best"] == full["best"]


def _interrupt_and_resume(shapes_root, tmp_path, args, stop_at):
    """An uninterrupted run, and the same run stopped before batch `stop_at` = (epoch, batch)
    and resumed; returns the stopped run's last.pt and both runs' metrics rows."""
    fit(tiny_cfg(shapes_root, *args), run_dir=tmp_path / "full")
    run = tmp_path / "parts"
    stopped = fit(
        tiny_cfg(shapes_root, *args),
        run_dir=run,
        should_stop=lambda epoch, batch: (epoch, batch) == stop_at,
    )
    assert stopped["interrupted"] == "stop requested"
    assert len(stopped["history"]) == stop_at[0] - 1
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    fit(tiny_cfg(shapes_root, *args, f"trainer.resume={run}"))
    assert_same_weights(weights(tmp_path / "full"), weights(run))
    rows = read_metrics_csv(run / "metrics.csv")
    expected = read_metrics_csv(tmp_path / "full" / "metrics.csv")
    for a, b in zip(rows, expected, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)
        assert a["lr"] == b["lr"]
    return ckpt, rows, expected


def test_resume_mid_epoch_is_exact_with_schedules_sampling_and_dropout(shapes_root, tmp_path):
    args = (
        "trainer.epochs=2",
        "optim.schedule=cosine",
        "optim.warmup_steps=2",
        "objective.label_smoothing=0.1",
        "objective.scheduled_sampling.start_epoch=1",
        "objective.scheduled_sampling.increase_prob=0.3",
        "decoder.dropout=0.3",
    )
    ckpt, rows, expected = _interrupt_and_resume(shapes_root, tmp_path, args, (2, 1))
    assert ckpt["epoch"] == 1 and ckpt["trainer_state"]["batch"] == 1 and ckpt["step"] == 4
    assert [r["step"] for r in rows] == [r["step"] for r in expected] == [3, 6]


def test_augmentation_depends_only_on_seed_epoch_and_item(shapes_root):
    from captioning.data.coco import load_coco_captions
    from captioning.data.datasets import CaptionDataset
    from captioning.data.transforms import imagenet_preprocess, train_transform
    from captioning.vocab import Vocabulary

    records = load_coco_captions(
        shapes_root / "annotations" / "captions_val.json", shapes_root / "images"
    )[:3]
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    augment = train_transform(imagenet_preprocess(32), augment=True)
    data = CaptionDataset(records, vocab, augment, seed=7)
    data.set_epoch(1)
    first = data[2][0]
    torch.manual_seed(123)  # the global generator neither matters nor moves
    state = torch.get_rng_state()
    again = data[2][0]
    assert torch.equal(first, again) and torch.equal(torch.get_rng_state(), state)
    data.set_epoch(2)
    assert not torch.equal(data[2][0], first)  # a new augmentation every epoch
    other = CaptionDataset(records, vocab, augment, seed=8)
    other.set_epoch(1)
    assert not torch.equal(other[2][0], first)


@pytest.mark.slow
def test_resume_mid_epoch_is_exact_with_loader_workers_and_augmentation(shapes_root, tmp_path):
    args = ("trainer.epochs=2", "trainer.num_workers=2", "data.augment=true", "decoder.dropout=0.3")
    ckpt, _, _ = _interrupt_and_resume(shapes_root, tmp_path, args, (2, 2))
    assert ckpt["trainer_state"]["batch"] == 2 and ckpt["sampler"]["epoch"] == 2
    assert ckpt["loader_generator"] is not None


@pytest.mark.slow
def test_sigterm_writes_a_last_checkpoint_and_the_run_resumes(shapes_root, tmp_path):
    run = tmp_path / "run"
    tool = [
        sys.executable,
        str(ROOT / "tools" / "train.py"),
        f"data.root={shapes_root}",
        *TINY,
        *SMALL,
        "trainer.max_train_batches=null",
        "trainer.batch_size=2",
        f"hydra.run.dir={run}",
    ]
    proc = subprocess.Popen(
        [*tool, "trainer.epochs=1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # during epoch 2 (or its validation)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    done = ckpt["epoch"]
    assert done >= 1 and ckpt["trainer_state"]["batch"] >= 0
    out = subprocess.run(
        [*tool, f"trainer.epochs={done + 1}", f"trainer.resume={run}"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    assert [r["epoch"] for r in read_metrics_csv(run / "metrics.csv")] == list(range(1, done + 2))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == done + 1


def test_resume_needs_the_same_model(shapes_root, tmp_path):
    with pytest.raises(CaptioningError, match="no such run directory"):
        resume_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaptioningError, match=r"no checkpoints/last\.pt"):
        resume_source(tmp_path / "empty")
    assert resume_source(None) is None
    cfg = parse_config(tiny_cfg(shapes_root)).to_dict()
    other = {**cfg, "decoder": {**cfg["decoder"], "hidden_dim": 64}}

    path = save_checkpoint(
        tmp_path / "ck.pt", model={}, config=other, vocab=["<pad>"], epoch=1, step=1
    )
    with pytest.raises(CaptioningError, match="decoder config differs"):
        load_resume(path, cfg)
    assert os.path.exists(path)
