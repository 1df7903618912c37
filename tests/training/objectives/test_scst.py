"""Self-critical sequence training: the loss and its gradient, the baselines, the masking, that a
tiny model's reward rises for every decoder, the trainer plumbing (metrics, the in-run switch,
exact resume, DDP) and the presets. Warm starts (``trainer.init_from``): test_warm_start.py."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import HostSyncs, count_tokenizations, fit, small_cfg, tiny_model_config
from torch import nn

from captioning.checkpoint import load_checkpoint
from captioning.contracts import EncoderOutput
from captioning.data.captions import TokenizedCaptions
from captioning.data.loader import CaptionBatch
from captioning.data.records import ImageRecord
from captioning.decoding import DecodingSettings
from captioning.distributed import DistContext
from captioning.errors import CaptioningError
from captioning.models.caption_model import build_model
from captioning.rewards import SelfCriticalReward
from captioning.training import parse_config
from captioning.training.objectives import (
    CrossEntropyObjective,
    ObjectiveContext,
    SelfCriticalObjective,
    build_objective,
    leave_one_out_baseline,
    sampled_lengths,
    sequence_logprobs,
)
from captioning.training.objectives import scst as scst_module
from captioning.training.run_log import read_metrics_csv
from captioning.training.setup import set_up_run
from captioning.vocab import Vocabulary

DECODERS = {
    "rnn": ("rnn", {"cell": "rnn"}),
    "lstm": ("rnn", {"cell": "lstm"}),
    "gru": ("rnn", {"cell": "gru", "image_injection": "first_input"}),
    "attention": ("attention", {}),
    "updown": ("updown", {}),
}
REFS = {
    1: ["a red circle", "a big red circle"],
    2: ["a blue square", "one blue square"],
    3: ["two green triangles", "green triangles"],
    4: ["a yellow star above a circle", "a star and a circle"],
}
VOCAB = Vocabulary.build(c for cs in REFS.values() for c in cs)
RECORDS = [ImageRecord(i, Path(f"{i}.png"), tuple(cs)) for i, cs in REFS.items()]


def refs_batch(images: torch.Tensor | None, features: EncoderOutput | None = None) -> CaptionBatch:
    """All captions of the four REFS images, as the training loader batches them."""
    caps, index, ids = [], [], []
    for row, (image_id, captions) in enumerate(REFS.items()):
        for caption in captions:
            caps.append(VOCAB.encode(caption))
            index.append(row)
            ids.append(image_id)
    t = max(map(len, caps))
    captions = torch.tensor([c + [VOCAB.pad_id] * (t - len(c)) for c in caps])
    lengths = torch.tensor([len(c) for c in caps])
    return CaptionBatch(images, captions, lengths, torch.tensor(ids), torch.tensor(index), features)


def tiny_model(name: str, **settings) -> nn.Module:
    kind, decoder = DECODERS[name]
    torch.manual_seed(0)
    config = tiny_model_config(decoder=kind, embed_dim=16, hidden_dim=32, **decoder, **settings)
    return build_model(config, vocab_size=len(VOCAB))


def objective(**settings) -> SelfCriticalObjective:
    obj = SelfCriticalObjective(**settings)
    obj.setup(ObjectiveContext(VOCAB, RECORDS, decoding=DecodingSettings(max_len=10)))
    return obj


# -- the pieces ---------------------------------------------------------------------------------


def test_leave_one_out_baseline_is_the_mean_of_the_other_samples():
    rewards = np.array([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    expected = np.array([[4.0, 3.5, 1.5], [1.5, 1.5, 0.0]])
    np.testing.assert_allclose(leave_one_out_baseline(rewards), expected)
    # the advantages of an image sum to zero: a shift of all its rewards changes nothing
    shifted = leave_one_out_baseline(rewards + 10.0)
    np.testing.assert_allclose((rewards + 10.0) - shifted, rewards - expected)


def test_sampled_lengths_stop_at_the_first_end_or_pad():
    seqs = torch.tensor([[5, 6, 2, 0, 0], [5, 2, 7, 2, 0], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0]])
    assert sampled_lengths(seqs).tolist() == [3, 2, 5, 1]
    assert sampled_lengths(torch.tensor([[5, 0, 6, 2, 0]])).tolist() == [2]  # a sampled <pad>


@pytest.mark.parametrize("name", DECODERS)
def test_recomputed_logprobs_equal_the_sampling_scores(name, monkeypatch):
    """A model left in train mode with dropout: the objective itself turns dropout off
    (``dropout=false``), so the log-probabilities it recomputes with gradients are those of the
    distribution it sampled from, and it leaves the model in the mode it found."""
    model = tiny_model(name, dropout=0.5)
    model.train()  # as the training loop leaves it
    with torch.no_grad():
        model.decoder.out.bias[VOCAB.pad_id] = -1e4  # a trained model never emits <pad>
        model.decoder.out.bias[VOCAB.eos_id] = 2.0  # captions of different lengths
    seen = {}
    real_generate, real_logprobs = scst_module.generate, scst_module.sequence_logprobs

    def generate(*args, **kwargs):
        seen["gen"] = real_generate(*args, **kwargs)
        return seen["gen"]

    def sequence_logprobs(*args, **kwargs):
        seen["logprobs"] = real_logprobs(*args, **kwargs)
        return seen["logprobs"]

    monkeypatch.setattr(scst_module, "generate", generate)
    monkeypatch.setattr(scst_module, "sequence_logprobs", sequence_logprobs)
    with torch.no_grad():
        features = model.encode(torch.randn(4, 3, 16, 16))
    objective(baseline="mean", num_samples=4, max_len=7).loss(model, refs_batch(None, features))
    gen, logprobs = seen["gen"], seen["logprobs"]
    seqs = gen.sequences.flatten(0, 1)  # (16, T)
    assert (seqs == VOCAB.eos_id).any(dim=1).any() and (seqs == VOCAB.pad_id).any()
    assert logprobs.requires_grad
    torch.testing.assert_close(logprobs.sum(dim=1), gen.scores.flatten(), atol=1e-5, rtol=1e-5)
    assert model.training and all(m.training for m in model.decoder.modules())


def test_padding_after_end_is_masked():
    model = tiny_model("lstm")  # no dropout: train mode computes what eval mode does
    features = model.encode(torch.randn(2, 3, 16, 16)).select(torch.tensor([0, 1]))
    seqs = torch.tensor([[5, 6, 2, 0, 0, 0], [7, 2, 0, 0, 0, 0]])
    garbage = torch.tensor([[5, 6, 2, 9, 9, 4], [7, 2, 8, 8, 8, 8]])  # words after <end>
    lengths = sampled_lengths(seqs)
    assert torch.equal(lengths, sampled_lengths(garbage))
    a = sequence_logprobs(model.decoder, features, seqs, lengths)
    b = sequence_logprobs(model.decoder, features, garbage, lengths)
    torch.testing.assert_close(a, b)
    assert (a[0, 3:] == 0).all() and (a[1, 2:] == 0).all() and (a[:, :2] != 0).all()


# -- the gradient, by hand ---------------------------------------------------------------------


class Unigram(nn.Module):
    """A decoder whose next word ignores everything: p(w) = softmax(theta), the same each step.
    The gradient of log p(w) is onehot(w) - p, so the REINFORCE gradient is checkable by hand."""

    has_attention = False

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.theta = nn.Parameter(torch.zeros(vocab_size))
        with torch.no_grad():
            self.theta[VOCAB.pad_id] = -1e4  # never <pad>
            self.theta[VOCAB.bos_id] = -1e4
            self.theta[VOCAB.eos_id] = 1.0  # short captions

    def init_state(self, features: EncoderOutput) -> torch.Tensor:
        return features.vector.new_zeros(features.vector.size(0))

    def reorder_state(self, state: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return state.index_select(0, index)

    def step(self, tokens, state, features):
        logprobs = self.theta.log_softmax(-1).expand(tokens.size(0), -1)  # (N, V)
        return logprobs, state, {}

    def forward(self, features, inputs, lengths):
        return self.theta.expand(*inputs.shape, -1)  # (B, T, V) logits


class Counting:
    """A reward: how many of a caption's words are 'red' (records what it scored)."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def score_ids(self, ids: torch.Tensor, image_ids: list[int]) -> np.ndarray:
        self.seen.append(ids.clone())
        red = VOCAB.to_list().index("red")
        flat = ids.reshape(-1, ids.size(-1))
        counts = [(row[: sampled_lengths(row[None])[0]] == red).sum().item() for row in flat]
        return np.array(counts, dtype=np.float64).reshape(ids.shape[:-1])


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_loss_gradient_is_the_reinforce_formula(baseline):
    model = nn.Module()
    model.decoder = Unigram(len(VOCAB))
    obj = objective(baseline=baseline, num_samples=3)
    obj.reward = reward = Counting()
    features = EncoderOutput(torch.zeros(4, 2), torch.zeros(4, 1, 2))
    torch.manual_seed(3)
    out = obj.loss(model, refs_batch(None, features))
    (out.total / out.count).backward()

    seqs = reward.seen[0].flatten(0, 1)  # (4 * 3, T) the samples
    lengths = sampled_lengths(seqs)
    rewards = reward.score_ids(seqs, []).reshape(4, 3)
    if baseline == "mean":
        base = (rewards.sum(1, keepdims=True) - rewards) / 2
    else:  # the greedy caption of a unigram model is its most likely word, then the same again
        assert (reward.seen[1][:, 0] == VOCAB.eos_id).all()
        base = np.zeros_like(rewards)  # "<end>": no red word
    advantage = torch.tensor((rewards - base).reshape(-1), dtype=torch.float32)
    p = model.decoder.theta.detach().softmax(-1)
    grad = torch.zeros_like(p)
    for row, n, a in zip(seqs, lengths, advantage, strict=True):
        counts = torch.bincount(row[:n], minlength=p.numel()).float()
        grad -= a * (counts - n * p)  # d/dtheta of -(r - b) * sum_t log p(w_t)
    grad /= lengths.sum()
    assert out.count == lengths.sum()
    torch.testing.assert_close(model.decoder.theta.grad, grad)
    assert float(out.logs["reward"]) == pytest.approx(rewards.mean())
    assert float(out.logs["baseline"]) == pytest.approx(base.mean())
    assert float(out.logs["better"]) == pytest.approx((rewards > base).mean())
    words = lengths - (seqs == VOCAB.eos_id).any(dim=1).long()  # <end> is not a word
    assert float(out.logs["sample_len"]) == pytest.approx(words.float().mean().item())


def test_settings_are_checked_with_one_line_errors():
    cases = {
        "objective.baseline='best'": dict(baseline="best"),
        "objective.num_samples=1": dict(baseline="mean", num_samples=1),
        "objective.num_samples=0": dict(num_samples=0),
        "objective.cider_weight=-1": dict(cider_weight=-1),
        "objective.max_len=0": dict(max_len=0),
        "objective.start_epoch=0": dict(start_epoch=0),
        "objective.label_smoothing=2": dict(label_smoothing=2),
    }
    for needle, settings in cases.items():
        with pytest.raises(CaptioningError, match=needle.replace("(", r"\(")) as err:
            SelfCriticalObjective(**settings)
        assert "\n" not in str(err.value)
    with pytest.raises(CaptioningError, match="both 0"):
        SelfCriticalObjective(cider_weight=0)


# -- learning ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DECODERS)
def test_a_tiny_models_reward_rises_under_self_critical_training(name):
    model = tiny_model(name)
    batch = refs_batch(torch.randn(4, 3, 16, 16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()

    def step(obj) -> float:
        out = obj.loss(model, batch)
        optimizer.zero_grad()
        (out.total / out.count).backward()
        optimizer.step()
        return float(out.logs.get("reward", float("nan")))

    xe = CrossEntropyObjective()
    xe.setup(ObjectiveContext(VOCAB, RECORDS))
    for _ in range(15):  # a cross-entropy start: the model knows some words, not the captions
        step(xe)
    scst = objective(baseline="mean", num_samples=5)
    rewards = [step(scst) for _ in range(40)]
    first, last = np.mean(rewards[:10]), np.mean(rewards[-10:])
    assert last > first + 0.3, rewards
    assert model.decoder.training  # the objective restores the mode it found


# -- in the trainer ------------------------------------------------------------------------------


def test_a_self_critical_run_set_up_tokenizes_each_training_caption_once(
    shapes_root, tmp_path, monkeypatch
):
    """The reward takes the training references as the run tokenized them for the vocabulary
    (fails if it tokenizes them again), and they are what it made of the raw captions."""
    seen = count_tokenizations(monkeypatch)
    config = parse_config(small_cfg(shapes_root, "data.feature_cache=false", "objective=scst"))
    scst = build_objective(config.objective)
    run = set_up_run(
        config,
        run_dir=tmp_path / "run",
        resume=None,
        device=torch.device("cpu"),
        ctx=DistContext(),
        objective=scst,
    )
    assert run is not None and scst.reward is not None
    train = Counter(c for r in run.records["train"] for c in r.captions)
    assert sum(train.values()) > 100
    assert {c: seen[c] for c in train} == dict(train)  # each caption once (repeats: as often)
    raw = SelfCriticalReward(
        {r.image_id: r.captions for r in run.records["train"]}, vocab=run.vocab
    )
    ids = [r.image_id for r in run.records["train"]]
    assert all(scst.reward.cider.references(i) == raw.cider.references(i) for i in ids)
    rows = torch.randint(
        0, len(run.vocab), (len(ids), 3, 9), generator=torch.Generator().manual_seed(0)
    )
    np.testing.assert_array_equal(scst.reward(rows, ids), raw(rows, ids))


def test_the_reward_from_the_runs_tokens_equals_the_reward_from_the_raw_captions():
    """Given the run's tokens, the objective builds the reward it builds from the raw captions:
    the same references (also for non-ASCII, punctuation-only and empty captions, and a record
    without captions), the same rewards; tokens of other records are refused."""
    records = [
        *RECORDS,
        ImageRecord(5, Path("5.png"), ("Naïve café, très bien!", "?!", "", "a red circle.")),
        ImageRecord(6, Path("6.png"), ()),
        ImageRecord(7, Path("7.png"), ("A man's t-shirt <end>", "one __ under_score")),
    ]
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    built = []
    for tokens in (None, TokenizedCaptions(records)):
        obj = SelfCriticalObjective(bleu_weight=0.5)
        obj.setup(ObjectiveContext(vocab, records, train_tokens=tokens))
        built.append(obj.reward)
    raw, tokenized = built
    ids = [r.image_id for r in records if r.captions]
    assert 6 not in tokenized.cider and 6 not in raw.cider
    assert [tokenized.cider.references(i) for i in ids] == [raw.cider.references(i) for i in ids]
    rows = torch.randint(
        0, len(vocab), (len(ids), 4, 8), generator=torch.Generator().manual_seed(1)
    )
    np.testing.assert_array_equal(tokenized(rows, ids), raw(rows, ids))
    with pytest.raises(ValueError, match="other records"):
        SelfCriticalObjective().setup(
            ObjectiveContext(vocab, records[:2], train_tokens=TokenizedCaptions(records))
        )


def test_trainer_logs_the_rewards_and_switches_from_cross_entropy(shapes_root, tmp_path):
    args = ("trainer.epochs=2", "optim.schedule=none", "decoding.max_len=8")
    scst = ("objective=scst", "objective.start_epoch=2", "objective.num_samples=2")
    fit(small_cfg(shapes_root, *args, *scst), run_dir=tmp_path / "scst")
    fit(small_cfg(shapes_root, *args, "trainer.epochs=1"), run_dir=tmp_path / "xe")
    rows = read_metrics_csv(tmp_path / "scst" / "metrics.csv")
    xe_rows = read_metrics_csv(tmp_path / "xe" / "metrics.csv")
    names = ("train_reward", "train_baseline", "train_sample_len", "train_better")
    assert all(np.isnan(rows[0][k]) for k in names)  # epoch 1: cross-entropy
    assert rows[0]["train_loss"] == pytest.approx(xe_rows[0]["train_loss"], rel=1e-9)
    assert all(np.isfinite(rows[1][k]) for k in names)  # epoch 2: self-critical
    assert 0 <= rows[1]["train_better"] <= 1 and 0 < rows[1]["train_sample_len"] <= 8


def test_self_critical_resume_mid_epoch_is_exact(shapes_root, tmp_path):
    args = (
        "trainer.epochs=2",
        "objective=scst",
        "objective.baseline=mean",
        "objective.num_samples=2",
        "objective.dropout=true",
        "decoder.dropout=0.3",
        "decoding.max_len=6",
    )
    fit(small_cfg(shapes_root, *args), run_dir=tmp_path / "full")
    run = tmp_path / "parts"
    stopped = fit(
        small_cfg(shapes_root, *args),
        run_dir=run,
        should_stop=lambda epoch, batch: (epoch, batch) == (2, 1),
    )
    assert stopped["interrupted"] == "stop requested"
    fit(small_cfg(shapes_root, *args, f"trainer.resume={run}"))
    full = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    parts = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    for key in full:
        assert torch.equal(full[key], parts[key]), key
    rows = read_metrics_csv(run / "metrics.csv")
    expected = read_metrics_csv(tmp_path / "full" / "metrics.csv")
    for a, b in zip(rows, expected, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)
        assert a["train_reward"] == pytest.approx(b["train_reward"], rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_two_gloo_processes_train_with_self_critical_steps(shapes_root, tmp_path, baseline):
    from helpers import SMALL, TINY, torchrun_train

    run = tmp_path / "ddp"
    out = torchrun_train(
        f"data.root={shapes_root}",
        *TINY,
        *SMALL,
        "trainer.batch_size=4",
        "trainer.epochs=2",
        "objective=scst",
        "objective.start_epoch=2",
        f"objective.baseline={baseline}",
        "objective.num_samples=2",
        f"hydra.run.dir={run}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_metrics_csv(run / "metrics.csv")
    assert np.isnan(rows[0]["train_reward"]) and np.isfinite(rows[1]["train_reward"])
    assert rows[1]["step"] == 6  # both epochs took their 3 steps on both ranks together


def test_presets_compose():
    from helpers import compose_train

    shapes = parse_config(compose_train("experiment=shapes_scst"))
    assert shapes.objective.target.endswith("SelfCriticalObjective")
    assert shapes.trainer.init_from == "outputs/demo" and shapes.trainer.monitor == "CIDEr"
    for name in ("sat_vgg16_scst", "show_tell_vgg16_scst"):
        cfg = parse_config(compose_train(f"experiment={name}"))
        base = parse_config(compose_train(f"experiment={name.removesuffix('_scst')}"))
        assert cfg.objective.target.endswith("SelfCriticalObjective")
        assert cfg.optim.lr == 5e-5 and cfg.decoding.beam_size > 1
        assert cfg.trainer.monitor == "CIDEr" and cfg.decoder == base.decoder
        assert cfg.trainer.init_from == f"outputs/{name.removesuffix('_scst')}"


@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_a_self_critical_step_reads_the_device_once_per_generated_word_and_per_copy(
    baseline, monkeypatch
):
    """What a self-critical step reads back from the device (the module docstring): one value
    per decoding step (whether rows go on), then the image index, the captions for each reward
    (sampled, and greedy with baseline=greedy) and the sampled lengths for packing."""
    model, batch = tiny_model("lstm"), refs_batch(torch.randn(4, 3, 16, 16))
    obj = objective(baseline=baseline, num_samples=3)
    steps, step = [], model.decoder.step
    model.decoder.step = lambda *args: steps.append(1) or step(*args)
    syncs = HostSyncs(monkeypatch)
    count = syncs.count(lambda: obj.loss(model, batch))
    rewards = 2 if baseline == "greedy" else 1
    # _image_ids copies image_index (from the device) and image_ids (on the host) in one line
    assert count == len(steps) + 2 + rewards + 1, syncs.syncs
