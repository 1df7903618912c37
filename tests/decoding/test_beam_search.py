"""Batched beam search, for every decoder we have."""

import math

import pytest
import torch
from helpers import (
    ATT_CASES,
    B_,
    BOS,
    D_,
    DECODERS,
    EOS,
    PAD,
    ROOT,
    UPDOWN_CASES,
    A,
    C,
    D,
    E,
    G,
    H,
    L,
    TableDecoder,
    caption_length,
    decoder_features,
    make_decoder,
)

from captioning.decoding import DecodingSettings, beam_search, generate, greedy
from captioning.models.attention_decoder import AttentionDecoder
from captioning.models.decoder import RNNDecoder


def teacher_forced(dec, feats, seqs):
    """Summed log-probs (N,) and attention (N, T, L) or None of given sequences (N, T)."""
    n, t = seqs.shape
    lengths = torch.tensor([caption_length(s) for s in seqs.tolist()])
    inputs = torch.cat([torch.full((n, 1), BOS), seqs[:, :-1]], dim=1)  # (N, T)
    out = (
        dec(feats, inputs, lengths, return_alphas=True)
        if dec.has_attention
        else (dec(feats, inputs, lengths), None)
    )
    logprobs = out[0].log_softmax(-1).gather(2, seqs.unsqueeze(2)).squeeze(2)  # (N, T)
    mask = torch.arange(t) < lengths.unsqueeze(1)
    return (logprobs * mask).sum(1), out[1], lengths


@pytest.mark.parametrize("name", DECODERS)
def test_beam_size_one_is_greedy(name):
    dec, feats = make_decoder(name), decoder_features()
    g = greedy(dec, feats, max_len=12)
    b = beam_search(dec, feats, beam_size=1, max_len=12)
    assert b.sequences.shape[:2] == (4, 1)
    assert torch.equal(b.sequences, g.sequences)
    torch.testing.assert_close(b.scores, g.scores)
    if dec.has_attention:
        torch.testing.assert_close(b.attention, g.attention)


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_batched_beam_equals_one_image_at_a_time(name, length_penalty):
    dec, feats = make_decoder(name), decoder_features(5, seed=1)
    kw = dict(beam_size=3, n_best=3, max_len=10, length_penalty=length_penalty)
    batched = beam_search(dec, feats, **kw)
    for i in range(5):
        alone = beam_search(dec, feats.select(torch.tensor([i])), **kw)
        t = alone.sequences.size(2)
        assert torch.equal(batched.sequences[i, :, :t], alone.sequences[0])
        assert (batched.sequences[i, :, t:] == PAD).all()
        torch.testing.assert_close(batched.scores[i], alone.scores[0], atol=1e-5, rtol=1e-5)
        if dec.has_attention:
            torch.testing.assert_close(batched.attention[i, :, :t], alone.attention[0])


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("length_penalty", [0.0, 0.7])
def test_beam_scores_and_attention_match_teacher_forcing(name, length_penalty):
    """Each hypothesis' score is its log-probability under the model / length ** penalty, and
    its attention maps are the ones the model gives on that very sequence (tracked through the
    beam reordering)."""
    dec, feats = make_decoder(name), decoder_features(3, seed=2)
    out = beam_search(dec, feats, beam_size=4, n_best=4, max_len=9, length_penalty=length_penalty)
    seqs = out.sequences.reshape(12, -1)  # (B * n, T)
    logp, alphas, lengths = teacher_forced(
        dec, feats.select(torch.arange(3).repeat_interleave(4)), seqs
    )
    expected = logp / lengths.float() ** length_penalty
    torch.testing.assert_close(out.scores.reshape(12), expected, atol=1e-4, rtol=1e-5)
    if dec.has_attention:
        assert out.attention.shape == (3, 4, seqs.size(1), L)
        torch.testing.assert_close(out.attention.reshape(12, -1, L), alphas, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", DECODERS)
def test_n_best_distinct_and_sorted(name):
    dec, feats = make_decoder(name), decoder_features()
    out = beam_search(dec, feats, beam_size=5, n_best=5, max_len=8)
    assert out.sequences.shape[:2] == (4, 5) and out.scores.shape == (4, 5)
    assert (out.scores[:, :-1] >= out.scores[:, 1:]).all()
    for hyps in out.sequences.tolist():
        assert len({tuple(h[: caption_length(h)]) for h in hyps}) == 5


def test_beam_finds_a_better_caption_than_greedy():
    # greedy takes A (0.5) then C (0.3) then <end>: 0.135; beam finds B <end>: 0.45 * 0.95
    dec = TableDecoder(
        {
            BOS: {A: 0.5, B_: 0.45},
            A: {C: 0.3, D_: 0.25, A: 0.15, EOS: 0.18},
            C: {EOS: 0.9},
            B_: {EOS: 0.95},
            D_: {EOS: 0.5},
        }
    )
    g = greedy(dec, None, batch_size=2, max_len=6)
    b = beam_search(dec, None, batch_size=2, beam_size=2, max_len=6)
    assert g.best[0].tolist() == [A, C, EOS] and b.best[0].tolist() == [B_, EOS]
    assert (b.best_scores > g.best_scores + 0.5).all()  # they differ, and beam search wins
    assert b.best_scores[0].item() == pytest.approx(dec.score([B_, EOS]), abs=1e-5)
    assert g.best_scores[0].item() == pytest.approx(dec.score([A, C, EOS]), abs=1e-5)
    assert torch.equal(generate(dec, None, batch_size=2, beam_size=2).sequences, b.sequences)


def test_length_penalty_favours_longer_captions():
    # "A <end>" (0.5 * 0.6 = 0.3, 2 words) vs "B C D <end>" (0.3 * 0.9^3 = 0.219, 4 words)
    dec = TableDecoder(
        {BOS: {A: 0.5, B_: 0.3}, A: {EOS: 0.6}, B_: {C: 0.9}, C: {D_: 0.9}, D_: {EOS: 0.9}}
    )
    short, long_ = [A, EOS], [B_, C, D_, EOS]
    for penalty, order in ((0.0, [short, long_]), (1.0, [long_, short])):
        out = beam_search(
            dec, None, batch_size=1, beam_size=2, n_best=2, max_len=8, length_penalty=penalty
        )
        got = [h[: caption_length(h)] for h in out.sequences[0].tolist()]
        assert got == order, penalty
        expected = [dec.score(s) / len(s) ** penalty for s in order]
        assert out.scores[0].tolist() == pytest.approx(expected, abs=1e-5)


def every_caption(dec, feats, max_len, length_penalty):
    """Every caption of one image up to max_len words (ended by `<end>`, or cut at max_len) with
    its score, best first: each prefix expanded by every word decoding may emit (all but `<pad>`
    and `<start>`) through the step contract."""
    state, prefixes, sums = dec.init_state(feats), [[]], torch.zeros(1)
    found = []
    for t in range(1, max_len + 1):
        rows = feats.select(torch.zeros(len(prefixes), dtype=torch.long))
        tokens = torch.tensor([p[-1] if p else BOS for p in prefixes])
        logprobs, state, _ = dec.step(tokens, state, rows)  # (N, V)
        going, parents = [], []
        for i, prefix in enumerate(prefixes):
            for word, logprob in enumerate(logprobs[i].tolist()):
                if word in (PAD, BOS):  # never emitted
                    continue
                total = sums[i].item() + logprob
                if word == EOS or t == max_len:
                    found.append((total / t**length_penalty, [*prefix, word]))
                else:
                    going.append(([*prefix, word], total))
                    parents.append(i)
        if not going:
            break
        prefixes, sums = [p for p, _ in going], torch.tensor([x for _, x in going])
        state = dec.reorder_state(state, torch.tensor(parents))
    return sorted(found, key=lambda f: f[0], reverse=True)


@pytest.mark.parametrize(
    "name", ["lstm-every_step", "gru-first_input", *ATT_CASES[:1], *UPDOWN_CASES]
)
@pytest.mark.parametrize("length_penalty", [0.0, 0.7])
@pytest.mark.parametrize("n_best", [1, 7])
def test_beam_search_equals_exhaustive_enumeration(name, length_penalty, n_best):
    """With a beam as wide as every extension of every prefix (4 x 3^4 on a 6-word vocabulary
    whose `<pad>` and `<start>` are never emitted, 5 words), the best answer and the n-best scores are those of brute force over all captions,
    whatever stops the search early (an image leaves once its n_best answers are settled)."""
    torch.manual_seed(3)
    vocab, max_len = 6, 5  # 4 words decoding may emit: <end> and 3 others
    kind, rest = name.split("-", 1)
    sizes = {"vocab_size": vocab, "embed_dim": E, "hidden_dim": H}
    if kind == "att":
        dec = AttentionDecoder(grid_dim=G, cell=rest, attention_dim=7, dropout=0.0, **sizes)
    elif kind == "updown":
        dec = make_decoder(name, seed=3, vocab_size=vocab)
    else:
        dec = RNNDecoder(vector_dim=D, cell=kind, image_injection=rest, **sizes)
    dec.eval()
    with torch.no_grad():
        dec.out.weight.mul_(4.0)  # a peaked model: search choices matter
    feats = decoder_features(2, seed=4)
    beam = (vocab - 2) * (vocab - 3) ** (max_len - 1)
    out = beam_search(
        dec, feats, beam_size=beam, n_best=n_best, max_len=max_len, length_penalty=length_penalty
    )
    for i in range(2):
        with torch.no_grad():
            best = every_caption(dec, feats.select(torch.tensor([i])), max_len, length_penalty)
        assert len(best) == sum(3**t for t in range(4)) + 4 * 3**4  # ended early, or at word 5
        got = [h[: caption_length(h)] for h in out.sequences[i].tolist()]
        assert got == [words for _, words in best[:n_best]]
        expected = torch.tensor([score for score, _ in best[:n_best]])
        torch.testing.assert_close(out.scores[i], expected, atol=1e-5, rtol=1e-5)


def test_beam_config_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        greedy_cfg = compose(config_name="train", overrides=["decoding=greedy"]).decoding
        beam_cfg = compose(config_name="train", overrides=["decoding=beam"]).decoding
        default = compose(config_name="train").decoding
    assert default == beam_cfg  # beam 3 is the default decoding (the demo's)
    assert set(greedy_cfg) == set(beam_cfg)
    assert greedy_cfg.beam_size == 1 and beam_cfg.beam_size == 3
    dec, feats = make_decoder("lstm-every_step"), decoder_features()
    assert generate(dec, feats, **greedy_cfg).sequences.shape[:2] == (4, 1)
    assert generate(dec, feats, **beam_cfg).sequences.shape[:2] == (4, 1)
    assert math.isfinite(float(generate(dec, feats, **beam_cfg).scores.sum()))
    beam = DecodingSettings.from_mapping(beam_cfg, "decoding")  # the config group, parsed
    assert beam == DecodingSettings(beam_size=3) and beam.replace(beam_size=1) == DecodingSettings()
    assert torch.equal(
        generate(dec, feats, beam).sequences, generate(dec, feats, **beam_cfg).sequences
    )
