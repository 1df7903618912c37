"""The epoch loop (captioning.training.loop): mixed precision, compiled steps, non-finite steps
skipped.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import WORDS, HostSyncs, random_captions, tiny_model_config

from captioning.data.loader import CaptionBatch
from captioning.devices import autocast_dtype
from captioning.errors import CaptioningError
from captioning.models.caption_model import build_model
from captioning.training import NonFiniteLossError, TrainLoop
from captioning.training.objectives import CrossEntropyObjective
from captioning.training.optim import build_optimizer

# -- the objective: scheduled sampling, label smoothing ----------------------------------------------


def _model_config(**decoder):
    return tiny_model_config(embed_dim=6, hidden_dim=10, dropout=0.0, **decoder)


# -- mixed precision and devices ------------------------------------------------------------------


def test_bf16_autocast_and_grad_scaler_plumbing_run_on_cpu():
    torch.manual_seed(0)
    model = build_model(_model_config(), vocab_size=20)
    opt = build_optimizer(model, lr=1e-2)
    batches = []
    for seed in range(3):
        captions, lengths = random_captions(b=4, seed=seed)
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
        captions, lengths = random_captions(b=4, seed=seed)
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
    captions, lengths = random_captions(b=2)
    images = torch.full((2, 3, 16, 16), float("nan"))
    batch = CaptionBatch(images, captions, lengths, torch.tensor([1, 2]), torch.tensor([0, 1]))
    before = [p.detach().clone() for p in model.parameters()]
    stats = TrainLoop(model, opt, device=torch.device("cpu"), grad_clip=5.0).run_epoch([batch])
    assert stats.skipped == 1 and stats.steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


TINY_MODEL = tiny_model_config(cell="gru", max_len=5)


class FlakyObjective(CrossEntropyObjective):
    """Cross-entropy whose loss is NaN on the calls listed in `nan_calls` (0-based)."""

    def __init__(self, nan_calls):
        super().__init__()
        self.nan_calls, self.calls = set(nan_calls), 0

    def loss(self, model, batch):
        out = super().loss(model, batch)
        self.calls += 1
        if self.calls - 1 in self.nan_calls:
            out.total = out.total * float("nan")
        return out


def _tiny_batches(n: int):
    from captioning.data.loader import CaptionBatch
    from captioning.vocab import Vocabulary

    vocab = Vocabulary.build(WORDS)
    torch.manual_seed(0)
    batches = []
    for _ in range(n):
        captions = torch.tensor([vocab.encode(w) for w in WORDS])  # (3, T)
        batches.append(
            CaptionBatch(
                torch.randn(3, 3, 16, 16),
                captions,
                torch.full((3,), captions.shape[1]),
                torch.arange(3),
                torch.arange(3),
            )
        )
    return vocab, batches


def test_non_finite_steps_are_skipped_and_a_streak_stops_training():
    from captioning.models.caption_model import build_model

    vocab, batches = _tiny_batches(8)
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, vocab_size=len(vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    cpu = torch.device("cpu")
    flaky = FlakyObjective(nan_calls={1, 2, 5, 6, 7})
    loop = TrainLoop(model, optimizer, device=cpu, objective=flaky, max_nonfinite_steps=4)
    stats = loop.run_epoch(batches)
    assert (stats.steps, stats.nonfinite, stats.skipped, stats.nonfinite_streak) == (3, 5, 5, 3)
    assert math.isfinite(stats.loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # skipped: no update

    before = {k: v.clone() for k, v in model.named_parameters()}
    with pytest.raises(
        NonFiniteLossError, match=r"not finite for 4 consecutive steps \(epoch 2, batch 1\)"
    ):
        TrainLoop(
            model,
            optimizer,
            device=cpu,
            objective=FlakyObjective(nan_calls=range(8)),
            max_nonfinite_steps=4,
        ).run_epoch(batches, epoch=2, nonfinite_streak=stats.nonfinite_streak)
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())


def test_a_batch_left_with_one_image_is_skipped_not_a_batchnorm_crash():
    from captioning.models.caption_model import build_model

    vocab, batches = _tiny_batches(2)
    single = [
        b._replace(images=b.images[:1], image_index=torch.zeros(3, dtype=torch.long))
        for b in batches
    ]
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, vocab_size=len(vocab))  # vgg_tiny: BatchNorm1d in fc layers
    optimizer = torch.optim.Adam(model.parameters())
    loop = TrainLoop(model, optimizer, device=torch.device("cpu"))
    stats = loop.run_epoch([single[0], batches[1]])
    assert (stats.steps, stats.skipped, stats.nonfinite) == (1, 1, 0)


def test_summed_logs_are_reported_per_unit_and_merge_exactly_after_a_resume():
    """An attention model's epoch: ``xe`` and ``attention_penalty`` are their sums over the
    epoch's words divided by the words (like the loss, which they add up to); an epoch cut in
    two and merged (:func:`merge_stats`, as after a resume) gives the same numbers."""
    from captioning.training.epoch_stats import merge_stats
    from captioning.training.objectives import ObjectiveContext
    from captioning.vocab import SPECIALS, Vocabulary

    def run(batches, model):
        objective = CrossEntropyObjective()
        objective.setup(
            ObjectiveContext(Vocabulary([*SPECIALS, *(f"w{i}" for i in range(16))]), attention=True)
        )
        opt = build_optimizer(model, lr=0.0)  # the same model for every batch
        loop = TrainLoop(model, opt, objective=objective, device=torch.device("cpu"))
        return loop.run_epoch(batches)

    model, batches = _model_and_batches(4)
    torch.manual_seed(0)
    model = build_model(_model_config(decoder="attention"), vocab_size=20).eval()
    whole = run(batches, model)
    assert set(whole.extra) == {"xe", "attention_penalty"}
    assert whole.extra["xe"] + whole.extra["attention_penalty"] == pytest.approx(whole.loss)
    assert whole.extra["xe"] == pytest.approx(whole.log_sums["xe"] / whole.words, rel=1e-15)
    merged = merge_stats(run(batches[:1], model).partial(), run(batches[1:], model))
    for key in ("xe", "attention_penalty"):
        assert merged.extra[key] == pytest.approx(whole.extra[key], rel=1e-12)
    assert merged.loss == pytest.approx(whole.loss, rel=1e-12)


# -- host synchronisations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "decoder", [{"cell": "lstm"}, {"cell": "gru", "image_injection": "first_input"}, "attention"]
)
def test_a_cross_entropy_step_reads_one_value_back_to_the_host(decoder, monkeypatch):
    """Without DDP a step synchronises with the device once (whether to update); the loss,
    words and logs are read once at the epoch's end. Counted as the reads of two epochs of
    different lengths: (reads(4 steps) - reads(2 steps)) / 2 per step."""
    kind = {"decoder": "attention"} if decoder == "attention" else decoder
    model, batches = _model_and_batches(4)
    torch.manual_seed(0)
    model = build_model(_model_config(**kind), vocab_size=20)
    loop = TrainLoop(model, build_optimizer(model, lr=1e-2), device=torch.device("cpu"))
    loop.run_epoch(batches[:1])  # the optimizer's state exists from here on
    syncs = HostSyncs(monkeypatch)
    two = syncs.count(lambda: loop.run_epoch(batches[:2]))
    four = syncs.count(lambda: loop.run_epoch(batches))
    assert (four - two) / 2 == 1, syncs.syncs
    assert two - 2 == 1, syncs.syncs  # the epoch's sums, once


def test_the_progress_bar_reads_the_sums_once_per_interval(monkeypatch):
    """trainer.log_every=2 over 4 steps: the bar's figures are read at steps 1, 2 and 4."""
    model, batches = _model_and_batches(4)
    syncs = HostSyncs(monkeypatch)
    counts = {}
    for progress in (False, True):
        opt = build_optimizer(model, lr=1e-2)
        loop = TrainLoop(model, opt, device=torch.device("cpu"), progress=progress, log_every=2)
        loop.run_epoch(batches[:1])
        counts[progress] = syncs.count(lambda loop=loop: loop.run_epoch(batches))
    assert counts[True] - counts[False] == 3
