"""Optimizers and learning-rate schedules (captioning.training.optim)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import compose_train, tiny_model_config

from captioning.errors import CaptioningError
from captioning.models.caption_model import build_model
from captioning.training import parse_config
from captioning.training.optim import build_optimizer, build_scheduler, last_step_lr, lr_factor

compose_cfg = compose_train


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


def test_last_step_lr_is_the_rate_the_last_optimizer_step_used():
    model = build_model(_model_config(), vocab_size=20)
    opt = build_optimizer(model, lr=1e-2, encoder_lr=1e-4)
    sched = build_scheduler(opt, schedule="cosine", steps_per_epoch=4, epochs=1)
    assert last_step_lr(sched) == pytest.approx(1e-2)  # before any step: the first one's
    used = []
    for _ in range(4):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # the epoch ends with a small positive rate, not the next step's 0 of get_last_lr()
    assert sched.get_last_lr()[0] == pytest.approx(0.0)
    assert last_step_lr(sched) == pytest.approx(used[-1]) and used[-1] > 1e-4


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


# -- the objective: scheduled sampling, label smoothing ----------------------------------------------


def _model_config(**decoder):
    return tiny_model_config(embed_dim=6, hidden_dim=10, dropout=0.0, **decoder)
