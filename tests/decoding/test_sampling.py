"""Greedy decoding and sampling (temperature, top-k)."""

import math

import pytest
import torch
from helpers import B_, BOS, D_, DECODERS, EOS, A, C, TableDecoder, decoder_features, make_decoder

from captioning.decoding import greedy, sample


@pytest.mark.parametrize("name", DECODERS)
def test_sampling(name):
    dec, feats = make_decoder(name), decoder_features()
    g = greedy(dec, feats, max_len=10)

    def draw(seed, **kw):
        return sample(dec, feats, max_len=10, generator=torch.Generator().manual_seed(seed), **kw)

    a, b = draw(3, num_samples=4), draw(3, num_samples=4)
    assert a.sequences.shape[:2] == (4, 4) and torch.equal(a.sequences, b.sequences)
    assert not torch.equal(draw(3).sequences, draw(4).sequences)  # really random
    for kw in (
        dict(temperature=0.0),
        dict(temperature=1e-6),
        dict(temperature=1e-30),
        dict(top_k=1),
        dict(top_k=1, temperature=5.0),
    ):
        out = draw(0, **kw)
        assert torch.equal(out.sequences, g.sequences), kw
        torch.testing.assert_close(out.scores, g.scores)


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of Pearson's chi-square goodness-of-fit test of `counts` (V,) against `probs` (V,):
    the chi-square survival function ``Q(df / 2, stat / 2)`` over the categories with p > 0."""
    support = probs > 0
    if counts[~support].sum() > 0:  # drawn where the distribution has no mass
        return 0.0
    expected = probs[support] * counts.sum()
    stat = ((counts[support] - expected) ** 2 / expected).sum()
    df = torch.tensor((int(support.sum()) - 1) / 2, dtype=torch.float64)
    return float(torch.special.gammaincc(df, stat / 2))


CHI2_ALPHA = 1e-3  # false-positive rate of each goodness-of-fit test (seeds fixed: deterministic)


@pytest.mark.parametrize(("temperature", "top_k"), [(0.5, None), (2.0, None), (1.0, 3), (2.0, 4)])
def test_first_word_follows_tempered_softmax(temperature, top_k):
    """20,000 first words drawn by sample() fit softmax(logits / T) (restricted to the top k
    and renormalised) by a chi-square test at CHI2_ALPHA; the untempered, untruncated
    distribution is rejected from the same draws, so the test can tell them apart."""
    dec = TableDecoder({BOS: {EOS: 0.05, A: 0.3, B_: 0.2, C: 0.15, D_: 0.1, 3: 0.04}})  # E: 0.16
    draws = 20_000
    out = sample(
        dec,
        None,
        batch_size=1,
        num_samples=draws,
        max_len=1,
        temperature=temperature,
        top_k=top_k,
        generator=torch.Generator().manual_seed(0),
    )
    counts = torch.bincount(out.sequences[0, :, 0], minlength=9).double()  # (V,)
    logits = dec.logp[BOS].double()  # (V,), -inf for <pad> and <start>
    scaled = logits / temperature
    if top_k is not None:
        scaled = scaled.masked_fill(scaled < scaled.topk(top_k).values[-1], -math.inf)
    assert chi_square_p(counts, scaled.softmax(0)) > CHI2_ALPHA
    assert chi_square_p(counts, logits.softmax(0)) < CHI2_ALPHA
