"""The one result type (captioning.decoding.result): (B, K, T) always."""

import pytest
import torch
from torch import nn

from captioning.contracts import EncoderOutput
from captioning.decoding import DecodingSettings, Generation, beam_search, generate, greedy, sample
from captioning.models.decoder import RNNDecoder

try:
    from captioning.models.attention_decoder import AttentionDecoder
except ImportError:  # written in parallel; these cases skip until it exists
    AttentionDecoder = None


V, E, H, D, L, G = 23, 8, 12, 10, 4, 6  # vocab, embed, hidden, vector, regions, grid dim


ATT_CASES = [
    pytest.param(
        f"att-{cell}",
        marks=pytest.mark.skipif(
            AttentionDecoder is None, reason="attention decoder not written yet"
        ),
    )
    for cell in ["lstm", "gru", "rnn"]
]


def make(name: str, seed: int = 0) -> nn.Module:
    """A tiny decoder in eval mode: ``cell-injection`` (RNNDecoder) or ``att-cell``."""
    torch.manual_seed(seed)
    kind, cell = name.split("-", 1)
    if kind == "att":
        return AttentionDecoder(
            vocab_size=V,
            grid_dim=G,
            cell=cell,
            embed_dim=E,
            hidden_dim=H,
            attention_dim=7,
            dropout=0.0,
        ).eval()
    return RNNDecoder(
        vocab_size=V, vector_dim=D, cell=kind, embed_dim=E, hidden_dim=H, image_injection=cell
    ).eval()


def features(b: int = 4, seed: int = 0) -> EncoderOutput:
    g = torch.Generator().manual_seed(seed)
    return EncoderOutput(torch.randn(b, D, generator=g), torch.randn(b, L, G, generator=g))


# -- one result type, one settings type, one set of flags ---------------------------------------


@pytest.mark.parametrize("name", ["lstm-every_step", *ATT_CASES[:1]])
def test_every_strategy_gives_b_k_t_and_best_is_the_first(name):
    """sequences (B, K, T), scores (B, K), attention (B, K, T, L) for every strategy (K = 1 for
    greedy and one sample); best, best_scores and best_attention are the first of the K."""
    dec, feats = make(name), features()
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
