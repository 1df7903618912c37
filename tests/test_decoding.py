"""Decoding strategies: greedy, sampling and batched beam search, for every decoder we have."""

import itertools
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_tool
from PIL import Image
from torch import nn

from captioning.checkpoint import save_checkpoint
from captioning.contracts import EncoderOutput
from captioning.decoding import DecodingSettings, Generation, beam_search, generate, greedy, sample
from captioning.errors import CaptioningError
from captioning.inference import Captioner
from captioning.models.caption_model import build_model
from captioning.models.decoder import RNNDecoder
from captioning.vocab import Vocabulary

try:
    from captioning.models.attention_decoder import AttentionDecoder
except ImportError:  # written in parallel; these cases skip until it exists
    AttentionDecoder = None

ROOT = Path(__file__).resolve().parents[1]
V, E, H, D, L, G = 23, 8, 12, 10, 4, 6  # vocab, embed, hidden, vector, regions, grid dim
BOS, EOS, PAD = 1, 2, 0

RNN_CASES = [
    f"{cell}-{inj}"
    for cell, inj in itertools.product(
        ["rnn", "lstm", "gru"], ["every_step", "init_state", "first_input", "none"]
    )
]
ATT_CASES = [
    pytest.param(
        f"att-{cell}",
        marks=pytest.mark.skipif(
            AttentionDecoder is None, reason="attention decoder not written yet"
        ),
    )
    for cell in ["lstm", "gru", "rnn"]
]
DECODERS = RNN_CASES + ATT_CASES


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


def never_ends(dec: nn.Module) -> nn.Module:
    with torch.no_grad():
        dec.out.bias[EOS] = -1e9
    return dec


def length(seq: list[int]) -> int:
    """Words up to and including `<end>`."""
    return seq.index(EOS) + 1 if EOS in seq else len(seq)


def teacher_forced(dec, feats, seqs):
    """Summed log-probs (N,) and attention (N, T, L) or None of given sequences (N, T)."""
    n, t = seqs.shape
    lengths = torch.tensor([length(s) for s in seqs.tolist()])
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
    dec, feats = make(name), features()
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
    dec, feats = make(name), features(5, seed=1)
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
    dec, feats = make(name), features(3, seed=2)
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
    dec, feats = make(name), features()
    out = beam_search(dec, feats, beam_size=5, n_best=5, max_len=8)
    assert out.sequences.shape[:2] == (4, 5) and out.scores.shape == (4, 5)
    assert (out.scores[:, :-1] >= out.scores[:, 1:]).all()
    for hyps in out.sequences.tolist():
        assert len({tuple(h[: length(h)]) for h in hyps}) == 5


@pytest.mark.parametrize("name", DECODERS)
def test_never_ending_model_still_returns_max_len_words(name):
    dec, feats = never_ends(make(name)), features()
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
    dec, feats = never_ends(make(name)), features()

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


@pytest.mark.parametrize("name", DECODERS)
def test_sampling(name):
    dec, feats = make(name), features()
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


@pytest.mark.parametrize("benchmark", ["decoding", "decoder"])
def test_benchmark_references_compute_our_function(benchmark):
    """The benchmarks' tutorial-style references (tests/references.py) find our captions and
    compute our training loss and gradients: ``python -m benchmarks NAME --check``, run as a
    command from the repository root."""
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", benchmark, "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "DIFFERS" not in run.stdout and run.stdout.count(": ok") >= 8


class TableDecoder(nn.Module):
    """A bigram model with the step contract: log p(word | previous word) read from a table."""

    has_attention = False

    def __init__(self, probs: dict[int, dict[int, float]], vocab_size: int = 9) -> None:
        super().__init__()
        table = torch.full((vocab_size, vocab_size), 1.0 / vocab_size)  # unlisted rows: uniform
        for prev, row in probs.items():
            table[prev] = 0.0
            for word, p in row.items():
                table[prev, word] = p
            table[prev, E_] += 1.0 - sum(row.values())  # the rest of the mass: a word "E"
        self.logp = nn.Parameter(table.log(), requires_grad=False)

    def init_state(self, features, *, batch_size=None):
        return torch.zeros(1, features.vector.size(0) if features is not None else batch_size)

    def step(self, tokens, state, features):
        return self.logp[tokens], state, {}

    def reorder_state(self, state, index):
        return state.index_select(1, index)

    def score(self, seq: list[int]) -> float:
        return float(sum(self.logp[p, w] for p, w in zip([BOS, *seq], seq, strict=False)))


A, B_, C, D_, E_ = 4, 5, 6, 7, 8


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
        got = [h[: length(h)] for h in out.sequences[0].tolist()]
        assert got == order, penalty
        expected = [dec.score(s) / len(s) ** penalty for s in order]
        assert out.scores[0].tolist() == pytest.approx(expected, abs=1e-5)


def test_image_free_decoder():
    dec = make("lstm-none")
    g = greedy(dec, None, batch_size=3, max_len=8)
    b = beam_search(dec, None, batch_size=3, beam_size=3, n_best=2, max_len=8)
    s = sample(dec, None, batch_size=3, num_samples=2, max_len=8)
    assert g.sequences.size(0) == 3 and b.sequences.shape[:2] == (3, 2)
    assert s.sequences.shape[:2] == (3, 2)
    assert torch.equal(b.sequences[0], b.sequences[2])  # no image: every row is the same
    with pytest.raises(CaptioningError, match="batch_size"):
        beam_search(dec, None, beam_size=2)


def test_generate_dispatch_and_errors():
    dec, feats = make("gru-every_step"), features()
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


def every_caption(dec, feats, max_len, length_penalty):
    """Every caption of one image up to max_len words (ended by `<end>`, or cut at max_len) with
    its score, best first: each prefix expanded by every word through the step contract."""
    state, prefixes, sums = dec.init_state(feats), [[]], torch.zeros(1)
    found = []
    for t in range(1, max_len + 1):
        rows = feats.select(torch.zeros(len(prefixes), dtype=torch.long))
        tokens = torch.tensor([p[-1] if p else BOS for p in prefixes])
        logprobs, state, _ = dec.step(tokens, state, rows)  # (N, V)
        going, parents = [], []
        for i, prefix in enumerate(prefixes):
            for word, logprob in enumerate(logprobs[i].tolist()):
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


@pytest.mark.parametrize("name", ["lstm-every_step", "gru-first_input", *ATT_CASES[:1]])
@pytest.mark.parametrize("length_penalty", [0.0, 0.7])
@pytest.mark.parametrize("n_best", [1, 7])
def test_beam_search_equals_exhaustive_enumeration(name, length_penalty, n_best):
    """With a beam as wide as every extension of every prefix (4 x 3^4 on a 4-word vocabulary,
    5 words), the best answer and the n-best scores are those of brute force over all captions,
    whatever stops the search early (an image leaves once its n_best answers are settled)."""
    torch.manual_seed(3)
    vocab, max_len = 4, 5
    kind, rest = name.split("-", 1)
    sizes = {"vocab_size": vocab, "embed_dim": E, "hidden_dim": H}
    if kind == "att":
        dec = AttentionDecoder(grid_dim=G, cell=rest, attention_dim=7, dropout=0.0, **sizes)
    else:
        dec = RNNDecoder(vector_dim=D, cell=kind, image_injection=rest, **sizes)
    dec.eval()
    with torch.no_grad():
        dec.out.weight.mul_(4.0)  # a peaked model: search choices matter
    feats = features(2, seed=4)
    beam = vocab * (vocab - 1) ** (max_len - 1)
    out = beam_search(
        dec, feats, beam_size=beam, n_best=n_best, max_len=max_len, length_penalty=length_penalty
    )
    for i in range(2):
        with torch.no_grad():
            best = every_caption(dec, feats.select(torch.tensor([i])), max_len, length_penalty)
        assert len(best) == sum(3**t for t in range(4)) + 4 * 3**4  # ended early, or at word 5
        got = [h[: length(h)] for h in out.sequences[i].tolist()]
        assert got == [words for _, words in best[:n_best]]
        expected = torch.tensor([score for score, _ in best[:n_best]])
        torch.testing.assert_close(out.scores[i], expected, atol=1e-5, rtol=1e-5)


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


# -- Captioner and tools/caption.py ------------------------------------------------------------

CONFIG = {
    "encoder": {
        "_target_": "captioning.models.encoder.vgg_tiny",
        "width": 8,
        "image_size": 32,
        "vector_dim": 16,
    },
    "decoder": {
        "_target_": "captioning.models.decoder.RNNDecoder",
        "cell": "lstm",
        "embed_dim": 8,
        "hidden_dim": 16,
    },
    "decoding": {
        "beam_size": 1,
        "max_len": 6,
        "length_penalty": 0.0,
        "no_repeat_ngram_size": 0,
        "n_best": 1,
    },
}
VOCAB = Vocabulary.build(["a red circle", "a blue square", "a green triangle left of it"])


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model(CONFIG, vocab_size=len(VOCAB))
    path = save_checkpoint(
        tmp_path / "ck.pt",
        model=model.state_dict(),
        config=CONFIG,
        vocab=VOCAB.to_list(),
        epoch=1,
        step=1,
        metrics={},
    )
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(3):
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / f"{i}.png")
    return path, tmp_path / "images"


def test_captioner_n_best(checkpoint):
    path, images = checkpoint
    captioner = Captioner.from_checkpoint(path, device="cpu")
    files = sorted(images.glob("*.png"))
    assert isinstance(captioner.caption(files[0]), str)
    assert isinstance(captioner.caption(files[0], beam_size=3), str)
    three = captioner.caption(files[0], beam_size=3, n_best=3)
    assert isinstance(three, list) and len(three) == 3
    many = captioner.caption(files, beam_size=3, n_best=2)
    assert len(many) == 3 and all(len(c) == 2 for c in many) and many[0] == three[:2]
    assert captioner.caption(files, beam_size=3) == [c[0] for c in many]


def test_caption_tool_flags(checkpoint):
    path, images = checkpoint
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "caption.py"),
            "-c",
            str(path),
            str(images),
            "--beam-size",
            "3",
            "--n-best",
            "2",
            "--batch-size",
            "2",
            "--length-penalty",
            "0.5",
            "--no-repeat-ngram-size",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line.split("\t") for line in run.stdout.splitlines()]
    assert len(lines) == 6 and all(len(parts) == 3 for parts in lines)
    for first, second in zip(lines[::2], lines[1::2], strict=True):
        assert first[0] == second[0] and float(first[1]) >= float(second[1])

    def output(*flags):
        done = run_tool("caption.py", "-c", path, images / "*.png", *flags)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    greedy_lines = output("--batch-size", "2")
    assert len(greedy_lines) == 3 and all(len(x.split("\t")) == 2 for x in greedy_lines)
    assert output("--sample", "--temperature", "0") == greedy_lines
    drawn = output("--sample", "--seed", "1", "--num-samples", "2", "--top-k", "5")
    assert len(drawn) == 6 and drawn == output(
        "--sample", "--seed", "1", "--num-samples", "2", "--top-k", "5"
    )
    bad = run_tool("caption.py", "-c", path, images, "--beam-size", "2", "--n-best", "3")
    assert bad.returncode == 2 and "n_best" in bad.stderr
    bad = run_tool("caption.py", "-c", path, images, "--temperature", "0.5")
    assert bad.returncode == 2 and "--sample" in bad.stderr


def test_beam_config_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        greedy_cfg = compose(config_name="train").decoding
        beam_cfg = compose(config_name="train", overrides=["decoding=beam"]).decoding
    assert set(greedy_cfg) == set(beam_cfg)
    assert greedy_cfg.beam_size == 1 and beam_cfg.beam_size == 3
    dec, feats = make("lstm-every_step"), features()
    assert generate(dec, feats, **greedy_cfg).sequences.shape[:2] == (4, 1)
    assert generate(dec, feats, **beam_cfg).sequences.shape[:2] == (4, 1)
    assert math.isfinite(float(generate(dec, feats, **beam_cfg).scores.sum()))
    beam = DecodingSettings.from_mapping(beam_cfg, "decoding")  # the config group, parsed
    assert beam == DecodingSettings(beam_size=3) and beam.replace(beam_size=1) == DecodingSettings()
    assert torch.equal(
        generate(dec, feats, beam).sequences, generate(dec, feats, **beam_cfg).sequences
    )


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


BAD_SETTINGS = {
    "beam_size=0: must be >= 1": dict(beam_size=0),
    "max_len=0: must be >= 1": dict(max_len=0),
    "no_repeat_ngram_size=-1: must be >= 0 (0 = off)": dict(no_repeat_ngram_size=-1),
    "n_best=0: must be >= 1": dict(n_best=0),
    "temperature=-0.5: must be >= 0.0 (0 = greedy)": dict(temperature=-0.5),
    "top_k=0: must be >= 1": dict(top_k=0),
    "num_samples=0: must be >= 1": dict(num_samples=0),
    "n_best=3 must be <= beam_size=2": dict(beam_size=2, n_best=3),
    "use beam_size=1 and n_best=1 with sample=True": dict(sample=True, beam_size=3),
    "num_samples=2 needs sample=True": dict(num_samples=2),
}


@pytest.mark.parametrize("message", list(BAD_SETTINGS))
def test_decoding_settings_checks_are_one_line_errors(message):
    """Each bad value is one CaptioningError line naming it, whether the settings are built
    directly, replaced or passed to generate() as keywords."""
    kw = BAD_SETTINGS[message]
    dec, feats = make("gru-every_step"), features(2)
    for attempt in (
        lambda: DecodingSettings(**kw).checked(),
        lambda: DecodingSettings().replace(**kw).checked(),
        lambda: generate(dec, feats, **kw),
    ):
        with pytest.raises(CaptioningError) as info:
            attempt()
        assert message in str(info.value) and "\n" not in str(info.value)
    key = re.search(r"\w+=", message).group()  # the first key the message names
    with pytest.raises(CaptioningError, match=rf"decoding\.{key}"):
        DecodingSettings(**kw).checked("decoding")  # in a config: the dotted key


def test_decoding_settings_replace_to_dict_and_old_mappings():
    settings = DecodingSettings(beam_size=3, n_best=2)
    assert settings.replace(max_len=5) == DecodingSettings(beam_size=3, n_best=2, max_len=5)
    assert settings.replace() is settings and settings.beam_size == 3  # frozen, unchanged
    assert DecodingSettings.from_mapping(settings.to_dict()) == settings
    old = DecodingSettings.from_mapping({"max_len": 6})  # an older checkpoint's few keys
    assert old == DecodingSettings(max_len=6)
    with pytest.raises(CaptioningError, match=r"decoding.beem_size .*did you mean beam_size"):
        settings.replace(beem_size=2)
    with pytest.raises(CaptioningError, match=r"sample='yes': must be true or false"):
        settings.replace(sample="yes")
    with pytest.raises(CaptioningError, match=r"decoding.max_len=0: must be >= 1"):
        DecodingSettings.from_mapping({"max_len": 0}, "decoding")


def test_run_config_decoding_is_the_settings_and_n_best_is_checked():
    from hydra import compose, initialize_config_dir

    from captioning.training.config import parse_config

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        good = compose(config_name="train", overrides=["decoding=beam"])
        bad = compose(config_name="train", overrides=["decoding.n_best=3"])
    assert parse_config(good).decoding == DecodingSettings(beam_size=3)
    with pytest.raises(CaptioningError) as info:
        parse_config(bad)
    assert str(info.value) == "decoding.n_best=3 must be <= decoding.beam_size=1"


def _options(help_text: str) -> dict[str, str]:
    """``--flag`` -> its whole entry (flag, metavar and help, whitespace collapsed) in --help."""
    entries: dict[str, str] = {}
    flag = None
    for line in help_text.splitlines():
        if line.startswith("  -"):
            flag = next(w for w in line.split() if w.startswith("--")).rstrip(",")
            entries[flag] = line
        elif flag is not None and line.startswith("    "):
            entries[flag] += " " + line
        else:
            flag = None
    return {k: " ".join(v.split()) for k, v in entries.items()}


def test_caption_and_evaluate_share_the_decoding_flags():
    """tools/caption.py and tools/evaluate.py take their decoding flags from one helper: the
    flags both have read the same in --help; caption.py adds --n-best and the sampling flags."""
    helps = {}
    for tool in ("caption.py", "evaluate.py"):
        done = run_tool(tool, "--help", COLUMNS="100")
        assert done.returncode == 0, done.stderr
        helps[tool] = _options(done.stdout)
    caption, evaluate = helps["caption.py"], helps["evaluate.py"]
    shared = ["--beam-size", "--max-len", "--length-penalty", "--no-repeat-ngram-size"]
    for flag in shared:
        assert flag in caption and caption[flag] == evaluate[flag], flag
    sampling = ["--sample", "--temperature", "--top-k", "--num-samples", "--seed"]
    for flag in ["--n-best", *sampling]:
        assert flag in caption and flag not in evaluate, flag
