"""Caption rewards for self-critical training: CIDEr-D with fixed document frequencies, BLEU-4,
with `<end>`, as self-critical.pytorch computes them.

Kept as one file (about 390 lines): it mirrors pycocoevalcap's ``cider_scorer.py`` step by
step and is checked against it as one unit.

Two scorers, named apart. ``CiderD(refs)`` (``end_token=None``) is the official CIDEr-D of
pycocoevalcap, the one evaluation reports (:mod:`captioning.evaluation.metrics` calls
pycocoevalcap itself): captions are their words. :class:`SelfCriticalReward` is the SCST reward
*with `<end>`, as self-critical.pytorch computes it* (ruotianluo's ``get_self_critical_reward``
with the ``CiderD`` of his ``cider`` repository, document frequencies from ``prepro_ngrams.py``,
which appends ``<eos>`` to every reference): every reference gets the end token appended, the
document frequencies are counted with it, and a sampled caption keeps its `<end>` when it emitted
one (a caption cut at ``max_len`` has none). So "... riding a horse on a <end>" shares no final
n-gram with the references ("... a horse <end>"), and a finished caption beats the same words cut
off. Rennie et al. (2017) found including the end token crucial. BLEU-4 in the reward sees the
same tokens, as the reference's.

Deliberate differences from self-critical.pytorch: (1) it scores the word strings, not word ids
mapped through the vocabulary: a reference word outside the vocabulary stays itself rather than
becoming ``UNK``, so a sampled `<unk>` matches nothing (it earns no reward for an unknown word);
(2) the references are not cut: the reference scores against its training labels, truncated at
``seq_length`` (16) tokens, and a truncated one carries no ``<eos>``; here every reference is
whole and ends with `<end>`; (3) the document-frequency corpus is the run's training records with
captions (the reference: Karpathy's train + restval). Nothing else differs: the formula below
is the reference's ``ciderD_scorer.py`` line for line (it equals pycocoevalcap's).

:class:`CiderD` is pycocoevalcap's ``Cider`` (``cider_scorer.py``) with the document
frequencies computed once over a fixed corpus, the training references, as self-critical
training does (Rennie et al. 2017), rather than over the images being scored; built from a test
set's references it gives pycocoevalcap's per-image scores. Mirrored exactly: 1..4-grams of
whitespace tokens; df(g) = number of corpus *images* whose references hold g, ``ref_len`` =
log(number of corpus images), tf-idf = tf * (ref_len - log(max(1, df))); per order, the sum over
the candidate's n-grams of min(v_cand, v_ref) * v_ref (clipping on tf-idf values) over both norms
(unless one is 0), times exp(-delta^2 / (2 sigma^2)), sigma 6, averaged over references and
orders, x 10. Its "length" is the bigram count (words - 1, 0 for an empty caption), so delta is
the word-count difference except for empty captions, whose scores are 0 anyway.

Cached: idf values of the n-grams with df >= 2 (max(1, df) gives df = 1 the weight of unseen
n-grams, so those are left out: a smaller table for COCO), each image's tokenised references, and
for the last ``cache_size`` images scored the tf-idf vectors, norms and lengths of their
references. A candidate then costs one n-gram count plus a dictionary look-up per n-gram and
reference (about 30 us per caption; 16 images x 5 samples in a few ms).

Candidates are raw strings (tokenised with :func:`captioning.text.tokenize`, like the
references), token lists, or token ids: a row stops at its first `<end>` or `<pad>`, `<start>` is
skipped, other ids are their vocabulary words, so `<unk>` is the word ``"<unk>"`` (as in
``Vocabulary.decode``). With an end token, a row that stops at `<end>` keeps it (one that stops at
`<pad>` or at its last column does not), and a raw string or token list is a finished caption:
it gets the end token unless its last token is it.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np
from torch import Tensor

from captioning.errors import CaptioningError
from captioning.text import tokenize
from captioning.vocab import EOS, Vocabulary

__all__ = ["CiderD", "SelfCriticalReward"]

logger = logging.getLogger(__name__)

Caption = str | Sequence[str]  # a raw caption, or its tokens
TokenIds = Tensor | Sequence[Sequence[int]]  # (N, T) or (B, K, T) ids, or N id lists
NGram = tuple[str, ...]
_Vector = tuple[list[dict[NGram, float]], list[float], int]  # tf-idf per order, norms, length
_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap BleuScorer's guards against 0 / 0


def _ngrams(words: Sequence[str], n: int) -> dict[NGram, int]:
    """Counts of the 1..n-grams of `words`, in pycocoevalcap's order (by order, then position)."""
    counts: dict[NGram, int] = {}
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            gram = tuple(words[i : i + k])
            counts[gram] = counts.get(gram, 0) + 1
    return counts


def _bleu_refs(references: Sequence[Sequence[str]]) -> tuple[list[int], dict[NGram, int]]:
    """pycocoevalcap's ``cook_refs``: the reference lengths and each n-gram's largest count."""
    maxcounts: dict[NGram, int] = {}
    for ref in references:
        for gram, count in _ngrams(ref, 4).items():
            maxcounts[gram] = max(maxcounts.get(gram, 0), count)
    return [len(ref) for ref in references], maxcounts


def _bleu4(words: Sequence[str], refs: tuple[list[int], dict[NGram, int]]) -> float:
    """pycocoevalcap's per-image BLEU-4: clipped precisions with its guards, the reference length
    closest to the candidate's (the shorter on ties), the brevity penalty."""
    reflens, maxcounts = refs
    testlen = len(words)
    reflen = min((abs(length - testlen), length) for length in reflens)[1]  # "closest"
    correct = [0, 0, 0, 0]
    for gram, count in _ngrams(words, 4).items():
        correct[len(gram) - 1] += min(maxcounts.get(gram, 0), count)
    bleu = 1.0
    for k in range(4):
        bleu *= (float(correct[k]) + _TINY) / (float(max(0, testlen - k)) + _SMALL)
    score = bleu ** (1.0 / 4)
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    return score * math.exp(1 - 1 / ratio) if ratio < 1 else score  # brevity penalty


def _rows(ids: TokenIds, image_ids: Sequence[Hashable] | Tensor) -> tuple[list, list, tuple]:
    """Ids as lists of rows, the image id of each row, and the shape the scores take."""
    image_ids = image_ids.tolist() if isinstance(image_ids, Tensor) else list(image_ids)
    if isinstance(ids, Tensor):
        if ids.dim() == 3:  # (B, K, T): K captions of each of B images
            b, k, t = ids.shape
            if len(image_ids) != b:
                raise CaptioningError(f"ids hold {b} images but got {len(image_ids)} image ids")
            rows = ids.reshape(b * k, t).tolist()  # (B * K, T)
            return rows, [i for i in image_ids for _ in range(k)], (b, k)
        if ids.dim() != 2:
            raise CaptioningError(f"ids must be (N, T) or (B, K, T), got shape {tuple(ids.shape)}")
        return ids.tolist(), image_ids, (ids.size(0),)
    return list(ids), image_ids, (len(ids),)


class CiderD:
    """CIDEr-D with document frequencies computed once over a corpus of references; official
    (pycocoevalcap's, no end token) unless `end_token` is given.

    Scores a candidate against the references of a corpus image (:meth:`score_images`,
    :meth:`score_ids`) or against references passed with it (:meth:`score`), always with the
    corpus's document frequencies. See the module docstring for the formula and the caches.

    Args:
        references: ``{image_id: [captions]}``, raw strings or token lists, at least one caption
            per image; the document-frequency corpus (e.g. the training split).
        vocab: the model's vocabulary, needed by :meth:`score_ids`.
        tokenizer: splits raw strings into tokens (``str.split`` for pre-tokenised text).
        n: largest n-gram order.
        sigma: standard deviation of the Gaussian length penalty.
        cache_size: images whose reference vectors are kept (least recently used dropped).
        end_token: None for the official CIDEr-D; a token (``"<end>"``) to append to every
            reference and keep on finished candidates, as self-critical.pytorch does.
    """

    def __init__(
        self,
        references: Mapping[Hashable, Sequence[Caption]],
        *,
        vocab: Vocabulary | None = None,
        tokenizer: Callable[[str], Sequence[str]] = tokenize,
        n: int = 4,
        sigma: float = 6.0,
        cache_size: int = 4096,
        end_token: str | None = None,
    ) -> None:
        if n < 1 or not sigma > 0:
            raise CaptioningError(f"CIDEr-D needs n >= 1 and sigma > 0, got n={n}, sigma={sigma}")
        self.n, self.sigma, self.vocab, self._tokenizer = n, float(sigma), vocab, tokenizer
        self._words = vocab.to_list() if vocab is not None else None
        self.end_token = sys.intern(end_token) if end_token is not None else None
        self._refs = {i: tuple(self._tokens(c) for c in cs) for i, cs in references.items()}
        if not self._refs:
            raise CaptioningError("CIDEr-D needs reference captions for its document frequencies")
        empty = [i for i, refs in self._refs.items() if not refs]
        if empty:
            raise CaptioningError(
                f"{len(empty)} images without reference captions, e.g. {empty[:5]}"
            )
        df: Counter[NGram] = Counter()
        for refs in self._refs.values():
            df.update({gram for ref in refs for gram in _ngrams(ref, n)})
        self.ref_len = math.log(float(len(self._refs)))
        self._idf = {g: self.ref_len - math.log(float(c)) for g, c in df.items() if c > 1}
        self._ref_vectors = functools.lru_cache(maxsize=cache_size)(self._image_vectors)
        logger.info("CIDEr-D: %d images, %d n-grams with df >= 2", len(self._refs), len(self._idf))

    def __contains__(self, image_id: Hashable) -> bool:
        return image_id in self._refs

    def references(self, image_id: Hashable) -> tuple[tuple[str, ...], ...]:
        """The tokenised reference captions of a corpus image (with the end token, if any)."""
        return self._refs[image_id]

    def decode(self, ids: TokenIds) -> list[list[str]]:
        """(N, T) ids or N id lists -> N word lists (up to `<end>`/`<pad>`, no `<start>`; the end
        token last where a row stopped at `<end>`, if the scorer has one)."""
        if self._words is None:
            raise CaptioningError("scoring token ids needs the vocabulary: pass vocab=")
        words, size, v = self._words, len(self._words), Vocabulary
        captions = []
        for row in ids.tolist() if isinstance(ids, Tensor) else ids:
            caption = []
            for i in row:
                if i == v.eos_id or i == v.pad_id:
                    if i == v.eos_id and self.end_token is not None:
                        caption.append(self.end_token)  # finished: it emitted <end>
                    break
                if not 0 <= i < size:
                    raise CaptioningError(f"token id {i} outside the vocabulary (size {size})")
                if i != v.bos_id:
                    caption.append(words[i])
            captions.append(caption)
        return captions

    def score(
        self, candidates: Sequence[Caption], references: Sequence[Sequence[Caption]]
    ) -> np.ndarray:
        """CIDEr-D of each candidate against the references given with it (nothing cached).

        Args:
            candidates: N captions (raw strings or token lists).
            references: N lists of reference captions, at least one each.

        Returns:
            (N,) float64 scores.
        """
        if len(candidates) != len(references):
            raise CaptioningError(
                f"got {len(candidates)} candidates but {len(references)} reference lists"
            )
        scores = np.empty(len(candidates))  # (N,)
        for j, (candidate, refs) in enumerate(zip(candidates, references, strict=True)):
            if not refs:
                raise CaptioningError(f"candidate {j} has no reference captions")
            ref_vectors = [self._vector(self._tokens(r)) for r in refs]
            scores[j] = self._cider(self._vector(self._tokens(candidate)), ref_vectors)
        return scores

    def score_images(
        self, candidates: Sequence[Caption], image_ids: Sequence[Hashable]
    ) -> np.ndarray:
        """CIDEr-D of each candidate against the references of its corpus image.

        Args:
            candidates: N captions (raw strings or token lists).
            image_ids: N corpus image ids (repeats welcome: vectors are cached).

        Returns:
            (N,) float64 scores.
        """
        return self._score_tokens([self._tokens(c) for c in candidates], list(image_ids))

    def score_ids(self, ids: TokenIds, image_ids: Sequence[Hashable] | Tensor) -> np.ndarray:
        """CIDEr-D of token-id captions (e.g. ``decoding.sample`` output) against their images.

        Args:
            ids: (N, T) ids with N image ids, or (B, K, T) with B image ids, or N id lists.
            image_ids: corpus image ids, a sequence or a tensor.

        Returns:
            (N,) or (B, K) float64 scores.
        """
        rows, image_ids, shape = _rows(ids, image_ids)
        return self._score_tokens(self.decode(rows), image_ids).reshape(shape)

    def _tokens(self, caption: Caption) -> tuple[str, ...]:
        """A raw caption or token list as tokens; a finished caption: the end token last."""
        words = self._tokenizer(caption) if isinstance(caption, str) else caption
        tokens = tuple(sys.intern(w) for w in words)
        end = self.end_token
        return (*tokens, end) if end is not None and tokens[-1:] != (end,) else tokens

    def _checked(self, count: int, image_ids: list[Hashable]) -> list[Hashable]:
        if len(image_ids) != count:
            raise CaptioningError(f"got {count} candidates but {len(image_ids)} image ids")
        unknown = [i for i in image_ids if i not in self._refs]
        if unknown:
            raise CaptioningError(
                f"no reference captions for {len(unknown)} image ids, e.g. {unknown[:5]}; build "
                "the scorer from "
                "the references of the images it scores (e.g. the training split)"
            )
        return image_ids

    def _score_tokens(self, captions: list[Sequence[str]], image_ids: list[Hashable]) -> np.ndarray:
        image_ids = self._checked(len(captions), image_ids)
        scores = np.empty(len(captions))  # (N,)
        for j, (words, image_id) in enumerate(zip(captions, image_ids, strict=True)):
            scores[j] = self._cider(self._vector(words), self._ref_vectors(image_id))
        return scores

    def _image_vectors(self, image_id: Hashable) -> list[_Vector]:
        return [self._vector(ref) for ref in self._refs[image_id]]

    def _vector(self, words: Sequence[str]) -> _Vector:
        """pycocoevalcap's ``counts2vec``: tf-idf per order, their norms, the bigram count."""
        vec: list[dict[NGram, float]] = [{} for _ in range(self.n)]
        norms, length = [0.0] * self.n, 0
        for gram, tf in _ngrams(words, self.n).items():
            k = len(gram) - 1
            value = float(tf) * self._idf.get(gram, self.ref_len)
            vec[k][gram] = value
            norms[k] += value**2
            if k == 1:
                length += tf
        return vec, [math.sqrt(x) for x in norms], length

    def _cider(self, hyp: _Vector, refs: Sequence[_Vector]) -> float:
        """pycocoevalcap's ``sim`` summed over references, averaged over orders and refs, x 10."""
        vec, norm, length = hyp
        totals = [0.0] * self.n
        for vec_ref, norm_ref, length_ref in refs:
            delta = float(length - length_ref)
            penalty = math.e ** (-(delta**2) / (2 * self.sigma**2))
            for k in range(self.n):
                ref_k, val = vec_ref[k], 0.0
                for gram, h in vec[k].items():
                    r = ref_k.get(gram)
                    if r is not None:
                        val += min(h, r) * r  # clipped
                if norm[k] != 0 and norm_ref[k] != 0:
                    val /= norm[k] * norm_ref[k]
                totals[k] += val * penalty
        return sum(totals) / self.n / len(refs) * 10.0


class SelfCriticalReward:
    """The SCST reward ``cider_weight * CIDEr-D + bleu_weight * BLEU-4``, with `<end>`, as
    self-critical.pytorch computes it (see the module docstring).

    CIDEr-D is :class:`CiderD` (document frequencies of `references`, with the end token); BLEU-4
    is the sentence BLEU-4 pycocoevalcap's ``Bleu(4)`` reports per image, against the same
    image's references (their lengths and n-gram maxima cached like the CIDEr-D vectors), on the
    same tokens. A term whose weight is 0 is not computed. ``end_token=None`` scores the words
    alone: then each term equals pycocoevalcap's per-image score.

    Args:
        references: ``{image_id: [captions]}``, as for :class:`CiderD`.
        vocab: the model's vocabulary, needed by :meth:`score_ids`.
        cider_weight: weight of CIDEr-D (>= 0).
        bleu_weight: weight of BLEU-4 (>= 0; at least one weight > 0).
        tokenizer: splits raw strings into tokens.
        cache_size: images whose reference statistics are kept.
        end_token: appended to every reference and kept on finished candidates (default
            ``"<end>"``, the vocabulary's); None: no end token.
    """

    def __init__(
        self,
        references: Mapping[Hashable, Sequence[Caption]],
        *,
        vocab: Vocabulary | None = None,
        cider_weight: float = 1.0,
        bleu_weight: float = 0.0,
        tokenizer: Callable[[str], Sequence[str]] = tokenize,
        cache_size: int = 4096,
        end_token: str | None = EOS,
    ) -> None:
        weights = (cider_weight, bleu_weight)
        finite = all(isinstance(w, int | float) and math.isfinite(w) and w >= 0 for w in weights)
        if not finite or not any(weights):
            raise CaptioningError(
                f"reward weights must be finite, >= 0 and not both 0; got cider_weight="
                f"{cider_weight}, bleu_weight={bleu_weight}"
            )
        self.cider_weight, self.bleu_weight = float(cider_weight), float(bleu_weight)
        self.cider = CiderD(
            references,
            vocab=vocab,
            tokenizer=tokenizer,
            cache_size=cache_size,
            end_token=end_token,
        )
        self._bleu_refs = functools.lru_cache(maxsize=cache_size)(
            lambda image_id: _bleu_refs(self.cider.references(image_id))
        )

    def score(self, candidates: Sequence[Caption], image_ids: Sequence[Hashable]) -> np.ndarray:
        """Rewards of captions of corpus images; Args and Returns as :meth:`CiderD.score_images`."""
        return self._reward([self.cider._tokens(c) for c in candidates], list(image_ids))

    def score_ids(self, ids: TokenIds, image_ids: Sequence[Hashable] | Tensor) -> np.ndarray:
        """Rewards of token-id captions; Args and Returns as :meth:`CiderD.score_ids`."""
        rows, image_ids, shape = _rows(ids, image_ids)
        return self._reward(self.cider.decode(rows), image_ids).reshape(shape)

    __call__ = score_ids

    def _reward(self, captions: list[Sequence[str]], image_ids: list[Hashable]) -> np.ndarray:
        image_ids = self.cider._checked(len(captions), image_ids)
        reward = np.zeros(len(captions))  # (N,)
        if self.cider_weight:
            reward += self.cider_weight * self.cider._score_tokens(captions, image_ids)
        if self.bleu_weight:
            bleu = [_bleu4(w, self._bleu_refs(i)) for w, i in zip(captions, image_ids, strict=True)]
            reward += self.bleu_weight * np.asarray(bleu)
        return reward
