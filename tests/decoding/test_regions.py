"""Decoding images with different numbers of regions in one batch (padded, with a mask): every
strategy gives padding a weight of exactly 0, and a padded image the answer it gets alone
(weights to 1e-6; the batch and the lone image run different matrix shapes, so float rounding
differs)."""

import pytest
import torch
from helpers import ATT_CASES, UPDOWN_CASES, make_decoder, padded_features

from captioning.decoding import beam_search, greedy, sample
from captioning.decoding.rows import RowFeatures

COUNTS = [3, 1, 4, 2]  # real regions per image, K = 1 included
CASES = [ATT_CASES[0], *UPDOWN_CASES]


def padding_of(feats, attention):
    """The weights (B, ..., K) on padded regions."""
    pad = ~feats.mask  # (B, K)
    shape = (pad.size(0),) + (1,) * (attention.dim() - 2) + (pad.size(1),)
    return attention[pad.view(shape).expand_as(attention)]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_padded_images_decode_as_alone_with_zero_weight_on_padding(name, strategy):
    dec = make_decoder(name)
    feats, alone = padded_features(COUNTS, seed=5)

    def decode(f):
        if strategy == "greedy":
            return greedy(dec, f, max_len=8)
        return beam_search(dec, f, beam_size=3, n_best=2, max_len=8)

    out = decode(feats)
    assert (padding_of(feats, out.attention) == 0).all()
    for b, one in enumerate(alone):
        single = decode(one)
        k, t = one.grid.size(1), single.sequences.size(2)
        assert out.sequences[b, :, :t].tolist() == single.sequences[0].tolist()
        assert (out.sequences[b, :, t:] == 0).all()
        # scores are sums of ~8 float32 log-probabilities: equal to 1e-6 relative
        torch.testing.assert_close(out.scores[b], single.scores[0], atol=0, rtol=1e-6)
        got = out.attention[b, :, :t, :k]
        torch.testing.assert_close(got, single.attention[0], atol=1e-6, rtol=0)
    if feats.mask is not None:
        assert out.attention[1, 0, 0, 0].item() == 1.0  # one real region: all the weight


@pytest.mark.parametrize("name", CASES)
def test_sampling_gives_padding_zero_weight_and_the_unpadded_scores(name):
    """Sampled captions of padded images score (sum of log-probabilities) what the same
    captions score when each image is teacher-forced alone."""
    dec = make_decoder(name)
    feats, alone = padded_features(COUNTS, seed=6)
    out = sample(dec, feats, max_len=8, num_samples=3, generator=torch.Generator().manual_seed(0))
    assert (padding_of(feats, out.attention) == 0).all()
    for b, one in enumerate(alone):
        for seq, score in zip(out.sequences[b], out.scores[b], strict=True):
            words = seq.tolist()
            n = words.index(2) + 1 if 2 in words else len(words)
            inputs = torch.tensor([[1, *words[: n - 1]]])
            with torch.no_grad():
                logits = dec(one, inputs, torch.tensor([n]))
            logprobs = logits.log_softmax(-1)[0].gather(1, torch.tensor(words[:n])[:, None])
            torch.testing.assert_close(score, logprobs.sum(), atol=1e-5, rtol=0)


def test_row_features_carry_the_mask():
    feats, _ = padded_features(COUNTS)
    rows = RowFeatures(feats, torch.tensor([1, 1, 3]))
    assert rows.mask.tolist() == feats.mask[[1, 1, 3]].tolist()
    assert rows.select(torch.tensor([2])).mask.tolist() == [feats.mask[3].tolist()]
    unmasked = feats._replace(mask=None)
    assert RowFeatures(unmasked, torch.tensor([0])).mask is None
