"""Tests for captioning.rewards: CIDEr-D against pycocoevalcap's Cider, token ids, BLEU-4, errors;
the SCST reward with `<end>` as self-critical.pytorch computes it.

pycocoevalcap's ``Cider`` and ``Bleu`` scorers are pure Python and are fed the project
tokenizer's tokens joined with spaces, so nothing here needs Java.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FIXTURES
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from captioning.data.captions import TokenizedCaptions
from captioning.data.records import ImageRecord
from captioning.errors import CaptioningError
from captioning.evaluation import load_references, load_results
from captioning.rewards import CiderD, SelfCriticalReward
from captioning.text import tokenize
from captioning.vocab import Vocabulary

DATA = FIXTURES / "coco-karpathy-test"
UNSEEN = "zyzzyva"  # a word in no reference caption


@pytest.fixture(scope="module")
def karpathy() -> tuple[dict[int, list[str]], dict[int, str]]:
    """The Karpathy-test references and human held-out captions, raw strings."""
    refs = load_references(DATA / "captions_karpathy_test_refs.json")
    return refs, load_results(DATA / "results_human_heldout.json", refs)


def joined(caption: str) -> str:
    """What pycocoevalcap is fed: the project tokenizer's tokens joined with spaces."""
    return " ".join(tokenize(caption))


def official_cider(refs: dict[int, list[str]], cands: dict[int, list[str]]) -> np.ndarray:
    """pycocoevalcap's per-image CIDEr-D; `refs` raw strings, `cands` token lists."""
    gts = {i: [joined(c) for c in refs[i]] for i in cands}
    return np.array(Cider().compute_score(gts, {i: [" ".join(w)] for i, w in cands.items()})[1])


def perturbed(words: list[str], kind: int, rng: random.Random, refs: list[list[str]]) -> list[str]:
    """A variant of a caption of one of eight kinds (drops, swaps, repeats, near-empty, long...)."""
    w, j = list(words), rng.randrange(max(len(words), 1))
    if kind == 0 and w:  # drop a word
        del w[j]
    elif kind == 1 and len(w) > 1:  # swap two words
        k = rng.randrange(len(w))
        w[j], w[k] = w[k], w[j]
    elif kind == 2 and w:  # repeat a word or a phrase
        w[j:j] = w[j : j + rng.randint(1, 3)] * rng.randint(2, 4)
    elif kind == 3:  # (nearly) empty
        w = rng.choice([[], w[:1], ["a"] * 4, w[-2:]])
    elif kind == 4:  # longer than every reference
        w = refs[0] + refs[-1] + w
    elif kind == 5:  # a copy of a reference
        w = list(rng.choice(refs))
    elif kind == 6:  # an unseen word in it
        w[j:j] = [UNSEEN]
    else:  # shuffled
        rng.shuffle(w)
    return w


@pytest.mark.slow
def test_cider_d_equals_pycocoevalcap_per_image_on_karpathy_test(karpathy) -> None:
    refs, preds = karpathy
    scorer = CiderD(refs)  # raw strings, tokenised inside with the project tokenizer
    ids = list(preds)
    ours = scorer.score_images([preds[i] for i in ids], ids)
    official = official_cider(refs, {i: tokenize(preds[i]) for i in ids})
    assert len(ids) == 4982 and scorer.ref_len == pytest.approx(np.log(4982.0))
    np.testing.assert_allclose(ours, official, rtol=0, atol=1e-6)
    assert ours.mean() == pytest.approx(0.8948207, abs=1e-6)  # pycocoevalcap: 0.89482074...


def test_cider_d_equals_pycocoevalcap_on_random_perturbations(karpathy) -> None:
    refs, preds = karpathy
    rng = random.Random(0)
    ids = rng.sample(sorted(refs), 800)
    subset = {i: refs[i] for i in ids}
    scorer = CiderD(subset)
    cands = {}
    for n, i in enumerate(ids):
        ref_words = [tokenize(c) for c in refs[i]]
        cands[i] = perturbed(tokenize(preds[i]), n % 8, rng, ref_words)
    official = official_cider(subset, cands)
    np.testing.assert_allclose(scorer.score_images(list(cands.values()), ids), official, atol=1e-6)
    # references passed explicitly: the same numbers, the corpus's document frequencies
    explicit = scorer.score([" ".join(w) for w in cands.values()], [refs[i] for i in ids])
    np.testing.assert_allclose(explicit, official, atol=1e-6)
    assert (official == 0).sum() > 10 and official.max() > 3  # empty-ish ones and copies


def test_token_ids_score_like_the_decoded_words(karpathy) -> None:
    refs, preds = karpathy
    ids = sorted(refs)[:300]
    vocab = Vocabulary.build([c for i in ids for c in refs[i]], min_count=3)
    scorer = CiderD({i: refs[i] for i in ids}, vocab=vocab)
    gen = torch.Generator().manual_seed(0)
    rows = torch.zeros(len(ids), 40, dtype=torch.long)  # (N, T), <pad> = 0
    for n, i in enumerate(ids):
        encoded = vocab.encode(preds[i])[n % 2 :]  # with and without <start>
        rows[n, : len(encoded)] = torch.tensor(encoded)
        rows[n, len(encoded) :] = torch.randint(4, len(vocab), (40 - len(encoded),), generator=gen)
        rows[n, len(encoded) + 1 :: 3] = 0  # ids after <end>, pads among them: all ignored
    decoded = [vocab.decode(row).split() for row in rows]  # keeps "<unk>"
    with_unk = np.array(["<unk>" in words for words in decoded])
    scores = scorer.score_ids(rows, torch.tensor(ids))
    assert 20 < with_unk.sum() < len(ids) - 20
    np.testing.assert_array_equal(scores, scorer.score_images(decoded, ids))
    raw = scorer.score_images([preds[i] for i in ids], ids)
    np.testing.assert_array_equal(scores[~with_unk], raw[~with_unk])
    # <unk> counts as a word seen in no reference, like any one unseen word
    i = ids[0]
    words = tokenize(refs[i][0])
    unk_ids = [vocab.token_to_id(w) for w in words[:2]] + [vocab.unk_id]
    assert scorer.score_ids([unk_ids], [i]) == scorer.score_images([[*words[:2], UNSEEN]], [i])
    # (B, K, T) samples of B images -> (B, K) scores, as for the rows one by one
    samples = rows[:30].view(10, 3, 40)
    by_image = scorer.score_ids(samples, ids[:10])
    assert by_image.shape == (10, 3)
    flat = scorer.score_ids(rows[:30], [i for i in ids[:10] for _ in range(3)])
    np.testing.assert_array_equal(by_image.reshape(-1), flat)


def test_references_as_the_runs_tokens_give_the_rewards_of_the_raw_captions(karpathy) -> None:
    """What self-critical training passes (the references as the run tokenized them for the
    vocabulary, :class:`TokenizedCaptions`) scores exactly like the raw captions (500 images
    of the Karpathy test split)."""
    refs, preds = karpathy
    ids = sorted(refs)[:500]
    refs = {i: refs[i] for i in ids}
    records = [ImageRecord(i, Path(f"{i}.jpg"), tuple(refs[i])) for i in ids]
    tokens = dict(zip(ids, TokenizedCaptions(records).by_record(), strict=True))
    vocab = Vocabulary.build([c for i in ids for c in refs[i]], min_count=5)
    raw = SelfCriticalReward(refs, vocab=vocab, bleu_weight=0.5)
    tokenized = SelfCriticalReward(tokens, vocab=vocab, bleu_weight=0.5)
    assert all(tokenized.cider.references(i) == raw.cider.references(i) for i in ids)
    cands = [preds[i] for i in ids]
    np.testing.assert_array_equal(tokenized.score(cands, ids), raw.score(cands, ids))
    rows = [vocab.encode(c)[1:] for c in cands]  # sampled ids, <unk> among them
    np.testing.assert_array_equal(tokenized(rows, ids), raw(rows, ids))


def test_repeated_images_reuse_cached_reference_vectors(karpathy) -> None:
    refs, preds = karpathy
    corpus = {i: refs[i] for i in sorted(refs)[:200]}
    ids = list(corpus)[:20]
    scorer, uncached = CiderD(corpus, cache_size=64), CiderD(corpus, cache_size=0)
    cands, image_ids = [preds[i] for i in ids] * 5, ids * 5
    first = scorer.score_images(cands, image_ids)
    np.testing.assert_array_equal(scorer.score_images(cands, image_ids), first)
    np.testing.assert_array_equal(uncached.score_images(cands, image_ids), first)
    info = scorer._ref_vectors.cache_info()
    assert (info.misses, info.hits) == (20, 180)


def test_training_document_frequencies_rank_candidates_like_pycocoevalcap_on_test_refs(
    tmp_path: Path,
) -> None:
    """Scored with train-set document frequencies, test-image candidates rank as pycocoevalcap
    ranks them with the test set's own.

    Each of 60 shapes test images gets four candidates: its first caption (held out of its
    references), another image's caption, the first caption shuffled, and its first half.
    Criterion: on every image both scorers rank the same candidate first; over all image x
    candidate-pair comparisons at least 95% are ordered alike; and the Spearman rank correlation
    of all 240 scores is at least 0.97. (Here they give 98% and 0.988; a scorer that ignores
    document frequencies altogether gives 92% and 0.94, and fails.)
    """
    from captioning.data.shapes import generate_shapes

    root = generate_shapes(tmp_path, train=300, val=0, test=60, seed=0)
    train = load_references(root / "annotations" / "captions_train.json")
    test = load_references(root / "annotations" / "captions_test.json")
    ids, rng = list(test), random.Random(0)
    held = [tokenize(test[i][0]) for i in ids]
    kinds = [
        held,
        held[1:] + held[:1],
        [rng.sample(w, len(w)) for w in held],
        [w[: len(w) // 2] for w in held],
    ]
    test_refs = {i: test[i][1:] for i in ids}
    scorer = CiderD(train)
    assert scorer.ref_len == pytest.approx(np.log(300)) and not any(i in scorer for i in ids)
    ours = np.stack([scorer.score(k, list(test_refs.values())) for k in kinds], axis=1)  # (60, 4)
    official = np.stack(
        [official_cider(test_refs, dict(zip(ids, k, strict=True))) for k in kinds], axis=1
    )
    assert (ours.argmax(1) == official.argmax(1)).all()
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    alike = [
        np.sign(ours[:, a] - ours[:, b]) == np.sign(official[:, a] - official[:, b])
        for a, b in pairs
    ]
    assert np.mean(alike) >= 0.95
    ranks = [np.argsort(np.argsort(s.ravel())) for s in (ours, official)]
    assert np.corrcoef(*ranks)[0, 1] >= 0.97


def test_bleu4_reward_equals_pycocoevalcap_per_image_bleu4(karpathy) -> None:
    refs, preds = karpathy
    rng = random.Random(1)
    ids = rng.sample(sorted(refs), 400)
    cands = [
        perturbed(tokenize(preds[i]), n % 8, rng, [tokenize(c) for c in refs[i]])
        for n, i in enumerate(ids)
    ]
    reward = SelfCriticalReward(
        {i: refs[i] for i in ids}, cider_weight=0.0, bleu_weight=1.0, end_token=None
    )
    gts = {i: [joined(c) for c in refs[i]] for i in ids}
    res = {i: [" ".join(w)] for i, w in zip(ids, cands, strict=True)}
    official = np.array(Bleu(4).compute_score(gts, res, verbose=0)[1][3])
    np.testing.assert_allclose(reward.score(cands, ids), official, rtol=1e-12, atol=1e-15)
    assert official.max() > 0.9 and official.min() < 1e-6


def test_reward_is_the_weighted_sum_of_cider_and_bleu(karpathy) -> None:
    refs, preds = karpathy
    ids = sorted(refs)[:50]
    subset = {i: refs[i] for i in ids}
    cands = [preds[i] for i in ids]
    vocab = Vocabulary.build(cands)
    cider = CiderD(subset, end_token="<end>").score_images(cands, ids)
    bleu = SelfCriticalReward(subset, cider_weight=0, bleu_weight=1).score(cands, ids)
    mixed = SelfCriticalReward(subset, vocab=vocab, cider_weight=0.7, bleu_weight=0.3)
    np.testing.assert_allclose(mixed.score(cands, ids), 0.7 * cider + 0.3 * bleu, rtol=1e-12)
    np.testing.assert_array_equal(SelfCriticalReward(subset).score(cands, ids), cider)
    rows = [vocab.encode(c)[1:] for c in cands]  # what decoding.sample gives (<end> last)
    np.testing.assert_array_equal(mixed(rows, ids), mixed.score(cands, ids))


# -- with <end>, as self-critical.pytorch ------------------------------------------------------


def test_the_reward_with_end_is_pycocoevalcaps_cider_d_over_tokens_ending_in_end(karpathy) -> None:
    """self-critical.pytorch's reward: every reference + `<end>` (document frequencies counted
    with it), a sample keeps `<end>` when it emitted one; a row cut at max_len has none. The
    official scorer fed those tokens gives the same per-image numbers."""
    refs, preds = karpathy
    ids = sorted(refs)[:300]
    subset = {i: refs[i] for i in ids}
    vocab = Vocabulary.build([c for i in ids for c in refs[i]])
    reward = SelfCriticalReward(subset, vocab=vocab)
    rows, cands = [], {}
    for n, i in enumerate(ids):
        encoded = vocab.encode(preds[i])[1:]  # words, <end>
        if n % 3 == 0:
            encoded = encoded[:-1]  # cut at max_len: no <end>
        elif n % 3 == 1:
            encoded = encoded + [vocab.pad_id] * 2  # finished, padded
        rows.append(encoded)
        words = vocab.decode(encoded).split()
        cands[i] = words + ["<end>"] * (vocab.eos_id in encoded)
    gts = {i: [joined(c) + " <end>" for c in refs[i]] for i in ids}
    official = Cider().compute_score(gts, {i: [" ".join(w)] for i, w in cands.items()})[1]
    np.testing.assert_allclose(reward(rows, ids), official, rtol=0, atol=1e-9)
    assert reward.cider.references(ids[0])[0][-1] == "<end>"
    # the official metric (no end token) is another number
    assert not np.allclose(CiderD(subset, vocab=vocab).score_ids(rows, ids), official)


def _corpus() -> dict[int, list[str]]:
    return {
        1: ["a man riding a horse", "a man rides a brown horse", "a person riding a horse"],
        2: ["a man riding a horse on a beach", "a horse on a beach with a man"],
        3: ["a dog on a couch", "a brown dog lying on a couch"],
        4: ["a cat on a bed", "a cat sleeping on a bed"],
        5: ["two people riding horses", "people riding horses on a trail"],
    }


def test_a_finished_caption_and_the_same_words_cut_off_score_differently() -> None:
    corpus = _corpus()
    vocab = Vocabulary.build(c for cs in corpus.values() for c in cs)
    words = vocab.encode("a man riding a horse")[1:-1]  # no <start>, no <end>
    finished, cut = [*words, vocab.eos_id], words  # cut: max_len reached
    reward = SelfCriticalReward(corpus, vocab=vocab)
    with_end = reward([finished, cut], [1, 1])
    assert with_end[0] > with_end[1] + 0.5
    assert reward([finished], [1])[0] == reward.score(["a man riding a horse"], [1])[0]
    without = SelfCriticalReward(corpus, vocab=vocab, end_token=None)([finished, cut], [1, 1])
    assert without[0] == without[1]  # what the reward did before: <end> dropped


def test_a_dangling_ending_costs_more_with_end_than_without() -> None:
    """ "... riding a horse on a" against "... riding a horse": with `<end>` its last n-grams
    match no reference ending, so it falls further below the complete caption."""
    corpus = _corpus()
    complete, dangling = "a man riding a horse", "a man riding a horse on a"
    gaps = {}
    for end in ("<end>", None):
        scorer = CiderD(corpus, end_token=end)
        good, bad = scorer.score_images([complete, dangling], [1, 1])
        gaps[end] = good - bad
    assert gaps[None] > 0 and gaps["<end>"] > gaps[None] + 0.2, gaps
    bleu = {
        end: SelfCriticalReward(corpus, cider_weight=0, bleu_weight=1, end_token=end).score(
            [complete, dangling], [1, 1]
        )
        for end in ("<end>", None)
    }
    assert bleu["<end>"][0] - bleu["<end>"][1] > bleu[None][0] - bleu[None][1]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda r: SelfCriticalReward(r, cider_weight=-1.0), "weights must be finite"),
        (lambda r: SelfCriticalReward(r, cider_weight=0, bleu_weight=0), "not both 0"),
        (lambda r: SelfCriticalReward(r, bleu_weight=float("nan")), "weights must be finite"),
        (lambda r: CiderD({}), "needs reference captions"),
        (lambda r: CiderD({**r, 9: []}), "1 images without reference captions"),
        (lambda r: CiderD(r).score_images(["a cat"], [404]), "no reference captions for 1"),
        (lambda r: CiderD(r).score_ids([[4, 5, 2]], [1]), "needs the vocabulary"),
        (lambda r: CiderD(r).score_images(["a cat", "a dog"], [1]), "2 candidates but 1"),
        (lambda r: CiderD(r).score(["a cat"], [[]]), "candidate 0 has no reference"),
    ],
)
def test_bad_weights_unknown_images_and_empty_corpus_raise_one_line_errors(build, message) -> None:
    refs = {1: ["A cat on a mat."], 2: ["Two dogs in the snow"]}
    with pytest.raises(CaptioningError, match=message) as caught:
        build(refs)
    assert "\n" not in str(caught.value)
