"""The one result type (captioning.decoding.result): (B, K, T) always."""

import pytest
import torch
from helpers import ATT_CASES, L, decoder_features, make_decoder

from captioning.decoding import DecodingSettings, Generation, beam_search, generate, greedy, sample

# -- one result type, one settings type, one set of flags ---------------------------------------


@pytest.mark.parametrize("name", ["lstm-every_step", *ATT_CASES[:1]])
def test_every_strategy_gives_b_k_t_and_best_is_the_first(name):
    """sequences (B, K, T), scores (B, K), attention (B, K, T, L) for every strategy (K = 1 for
    greedy and one sample); best, best_scores and best_attention are the first of the K."""
    dec, feats = make_decoder(name), decoder_features()
    runs = {
        1: [
            greedy(dec, feats, max_len=8),
            beam_search(dec, feats, beam_size=3, max_len=8),
            sample(dec, feats, max_len=8),
            generate(dec, feats, max_len=8),
            generate(dec, feats, DecodingSettings(sample=True, max_len=8)),
        ],
        3: [
            beam_search(dec, feats, beam_size=3, n_best=3, max_len=8),
            sample(dec, feats, num_samples=3, max_len=8),
            generate(dec, feats, beam_size=4, n_best=3, max_len=8),
            generate(dec, feats, sample=True, num_samples=3, max_len=8),
        ],
    }
    for k, gens in runs.items():
        for gen in gens:
            assert isinstance(gen, Generation)
            b, k_, t = gen.sequences.shape
            assert (b, k_) == (4, k) and gen.scores.shape == (4, k) and t <= 8
            assert torch.equal(gen.best, gen.sequences[:, 0]) and gen.best.shape == (4, t)
            assert torch.equal(gen.best_scores, gen.scores[:, 0])
            if dec.has_attention:
                assert gen.attention.shape == (4, k, t, L)
                assert torch.equal(gen.best_attention, gen.attention[:, 0])
            else:
                assert gen.attention is None and gen.best_attention is None


def test_best_first_sorts_each_images_hypotheses_by_score_stably_with_their_attention():
    sequences = torch.tensor([[[1, 1], [2, 2], [3, 3]], [[4, 4], [5, 5], [6, 6]]])  # (2, 3, 2)
    scores = torch.tensor([[-3.0, -1.0, -2.0], [-1.0, -5.0, -1.0]])  # (2, 3): a tie in row 1
    attention = torch.arange(2 * 3 * 2 * 4, dtype=torch.float).reshape(2, 3, 2, 4)
    ranked = Generation(sequences, scores, attention).best_first()
    assert ranked.scores.tolist() == [[-1.0, -2.0, -3.0], [-1.0, -1.0, -5.0]]
    assert ranked.sequences[:, :, 0].tolist() == [[2, 3, 1], [4, 6, 5]]  # ties keep their order
    assert torch.equal(ranked.attention[0, 0], attention[0, 1])
    assert torch.equal(ranked.attention[1, 2], attention[1, 1])
    assert Generation(sequences, scores).best_first().attention is None
