"""Tests for captioning.training.objectives.xe."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_model_config

from captioning.contracts import EncoderOutput
from captioning.data.loader import CaptionBatch
from captioning.models.caption_model import build_model
from captioning.models.decoder import RNNDecoder
from captioning.training.objectives import (
    CrossEntropyObjective,
    ObjectiveContext,
    caption_cross_entropy,
    sampled_forward,
    sampling_probability,
)
from captioning.vocab import SPECIALS, Vocabulary


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


@pytest.mark.parametrize("attention", [True, False])
def test_the_attention_regulariser_is_logged_apart_from_the_cross_entropy(attention):
    """With attention the step logs the summed cross-entropy (``xe``) and the summed regulariser
    (``attention_penalty``), which add up to the loss; without, nothing (the loss is the
    cross-entropy)."""
    torch.manual_seed(0)
    config = _model_config(decoder="attention") if attention else _model_config()
    model = build_model(config, vocab_size=20).eval()
    captions, lengths = _captions(b=5)
    index = torch.tensor([0, 0, 1, 1, 1])
    batch = CaptionBatch(torch.randn(2, 3, 16, 16), captions, lengths, index + 1, index)
    objective = CrossEntropyObjective()
    vocab = Vocabulary([*SPECIALS, *(f"w{i}" for i in range(16))])
    objective.setup(ObjectiveContext(vocab, attention=attention))
    out = objective.loss(model, batch)
    logp = model(batch.images, captions[:, :-1], lengths - 1, index).log_softmax(-1)  # (B, T, V)
    mask = captions[:, 1:] != 0
    nll = -logp.gather(2, captions[:, 1:].unsqueeze(2)).squeeze(2)[mask].sum()
    if not attention:
        assert objective.log_names == () and out.logs == {}
        torch.testing.assert_close(out.total, nll)
        return
    assert objective.log_names == objective.summed_logs == ("xe", "attention_penalty")
    torch.testing.assert_close(out.logs["xe"], nll)
    assert float(out.logs["attention_penalty"]) > 0
    torch.testing.assert_close(out.total, out.logs["xe"] + out.logs["attention_penalty"])
