"""generate(): dispatch, errors, and what every strategy shares."""

import itertools

import pytest
import torch
from helpers import ATT_CASES, BOS, DECODERS, EOS, PAD, decoder_features, make_decoder
from torch import nn

from captioning.decoding import DecodingSettings, beam_search, generate, greedy, sample
from captioning.errors import CaptioningError


def never_ends(dec: nn.Module) -> nn.Module:
    with torch.no_grad():
        dec.out.bias[EOS] = -1e9
    return dec


@pytest.mark.parametrize("name", DECODERS)
def test_never_ending_model_still_returns_max_len_words(name):
    dec, feats = never_ends(make_decoder(name)), decoder_features()
    outs = [
        greedy(dec, feats, max_len=7).sequences,
        beam_search(dec, feats, beam_size=3, n_best=2, max_len=7).sequences,
        sample(dec, feats, max_len=7, generator=torch.Generator().manual_seed(0)).sequences,
        sample(dec, feats, max_len=7, num_samples=2, top_k=3).sequences,
    ]
    for seqs in outs:
        assert seqs.size(-1) == 7 and seqs.size(0) == 4
        assert not (seqs == EOS).any()  # so every row has all 7 words
    scores = beam_search(dec, feats, beam_size=3, max_len=7).scores
    assert torch.isfinite(scores).all() and (scores > -1e6).all()


@pytest.mark.parametrize(
    "name", ["lstm-every_step", "gru-init_state", "rnn-first_input", *ATT_CASES[:1]]
)
def test_no_repeat_ngram(name):
    dec, feats = never_ends(make_decoder(name)), decoder_features()

    def bigrams(seq):
        return list(itertools.pairwise(seq))

    def has_repeat(seqs):
        return any(len(set(bigrams(s))) < len(bigrams(s)) for s in seqs)

    free = beam_search(dec, feats, beam_size=3, n_best=3, max_len=15).sequences.reshape(12, -1)
    assert has_repeat(free.tolist())  # the setup repeats bigrams when nothing stops it
    runs = [
        beam_search(dec, feats, beam_size=3, n_best=3, max_len=15, no_repeat_ngram_size=2),
        generate(dec, feats, max_len=15, no_repeat_ngram_size=2),
        sample(dec, feats, max_len=15, num_samples=3, no_repeat_ngram_size=2),
    ]
    for out in runs:
        seqs = out.sequences.reshape(-1, out.sequences.size(-1)).tolist()
        assert not has_repeat(seqs) and all(len(s) == 15 for s in seqs)
    once = beam_search(dec, feats, beam_size=2, max_len=15, no_repeat_ngram_size=1).sequences
    assert all(len(set(s)) == len(s) for s in once[:, 0].tolist())  # n = 1: no word twice


def test_image_free_decoder():
    dec = make_decoder("lstm-none")
    g = greedy(dec, None, batch_size=3, max_len=8)
    b = beam_search(dec, None, batch_size=3, beam_size=3, n_best=2, max_len=8)
    s = sample(dec, None, batch_size=3, num_samples=2, max_len=8)
    assert g.sequences.size(0) == 3 and b.sequences.shape[:2] == (3, 2)
    assert s.sequences.shape[:2] == (3, 2)
    assert torch.equal(b.sequences[0], b.sequences[2])  # no image: every row is the same
    with pytest.raises(CaptioningError, match="batch_size"):
        beam_search(dec, None, beam_size=2)


def test_generate_dispatch_and_errors():
    dec, feats = make_decoder("gru-every_step"), decoder_features()
    assert torch.equal(  # greedy
        generate(dec, feats, max_len=6).sequences, greedy(dec, feats, max_len=6).sequences
    )
    assert generate(dec, feats, beam_size=3, max_len=6).sequences.shape[:2] == (4, 1)
    beam_of_one = beam_search(dec, feats, beam_size=1, length_penalty=1.0)
    assert torch.equal(
        generate(dec, feats, n_best=1, length_penalty=1.0).scores, beam_of_one.scores
    )
    assert generate(dec, feats, sample=True, num_samples=2).sequences.shape[:2] == (4, 2)
    settings = DecodingSettings(beam_size=3, n_best=2, max_len=6)
    assert torch.equal(  # keyword overrides go on top of the settings
        generate(dec, feats, settings, n_best=3).sequences,
        beam_search(dec, feats, beam_size=3, n_best=3, max_len=6).sequences,
    )
    bad = [
        dict(beam_size=0),
        dict(beam_size=2, n_best=3),
        dict(max_len=0),
        dict(sample=True, beam_size=3),
        dict(num_samples=2),
        dict(no_repeat_ngram_size=-1),
        dict(sample=True, temperature=-1.0),
        dict(sample=True, top_k=0),
        dict(beem_size=3),
        dict(beam_size="3"),
    ]
    for kw in bad:
        with pytest.raises(CaptioningError):
            generate(dec, feats, **kw)


@pytest.mark.parametrize("name", ["lstm-every_step", *ATT_CASES[:1]])
@pytest.mark.parametrize(
    "settings",
    [
        DecodingSettings(max_len=6),
        DecodingSettings(max_len=6, sample=True, num_samples=3),
        DecodingSettings(max_len=6, sample=True, temperature=2.0, top_k=3),
        DecodingSettings(max_len=6, beam_size=3, n_best=3),
    ],
    ids=["greedy", "sample", "top_k", "beam"],
)
def test_no_strategy_emits_pad_or_start(name, settings):
    """An untrained model that favours `<pad>` and `<start>` above every word: no strategy emits
    them (`<pad>` only fills the positions after `<end>`), and the scores are the model's."""
    dec = make_decoder(name)
    with torch.no_grad():
        dec.out.bias[PAD] = dec.out.bias[BOS] = 20.0  # by far the likeliest words
    torch.manual_seed(1)
    out = generate(dec, decoder_features(3), settings)
    for row in out.sequences.flatten(0, 1).tolist():  # (B * K, T)
        end = row.index(EOS) + 1 if EOS in row else len(row)
        assert PAD not in row[:end] and BOS not in row, row
        assert all(w == PAD for w in row[end:]), row
    assert torch.isfinite(out.scores).all()
