"""Batched beam search over the decoder step contract: B x beam_size hypotheses in one tensor.

Users import :func:`beam_search` from :mod:`captioning.decoding`. Its cost follows the words
actually generated: an image leaves the working batch as soon as its answer is settled (its
n_best best finished hypotheses can no longer be beaten by any running one), so the decoder
steps only the hypotheses of images still searching. Attention maps are not carried along with
the hypotheses at every step: each step's maps are kept once, with the row every hypothesis came
from, and the maps of the returned hypotheses are traced back at the end (:class:`_Alphas`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captioning.contracts import EncoderOutput
from captioning.decoding.result import Generation
from captioning.decoding.rows import ban_repeats, decoder_of, never_emitted, rows_of, start, step
from captioning.decoding.settings import DecodingSettings

__all__ = ["beam_search"]


class _Alphas:
    """Every step's attention maps and back-pointers, to recover the maps of a few hypotheses.

    Step t (1-based) stepped N_t rows: ``maps[t - 1]`` (N_t, L) are their weights and
    ``parents[t - 1]`` (N_t,) the row of step t - 1 each of them continued (None at step 1).
    """

    def __init__(self) -> None:
        self.maps: list[Tensor] = []
        self.parents: list[Tensor | None] = []

    def push(self, alpha: Tensor, parent: Tensor | None) -> None:
        self.maps.append(alpha)
        self.parents.append(parent)

    def trace(self, lengths: Tensor, rows: Tensor) -> Tensor:
        """Maps (H, T, L) of H hypotheses of `lengths` (H,) words whose last word was computed
        at row `rows` (H,) of its step; zero after each hypothesis' end."""
        h, t_max = lengths.numel(), int(lengths.max()) if lengths.numel() else 0
        out = self.maps[0].new_zeros(h, t_max, self.maps[0].size(-1))  # (H, T, L)
        row = rows.clone()  # (H,) the row at step s of each hypothesis that has a word s
        for s in range(t_max, 0, -1):
            has = (lengths >= s).nonzero().squeeze(1)  # hypotheses with a word s
            at = row[has]
            out[has, s - 1] = self.maps[s - 1][at]
            if s > 1:
                row[has] = self.parents[s - 1][at]
        return out


class _Finished:
    """The best `k` finished hypotheses of each of B images, best first: score, words, length,
    and the row (of its last step's batch) where its last word was computed."""

    def __init__(self, b: int, k: int, max_len: int, pad_id: int, device: torch.device) -> None:
        self.scores = torch.full((b, k), -math.inf, device=device)
        self.seqs = torch.full((b, k, max_len), pad_id, dtype=torch.long, device=device)
        self.lengths = torch.zeros(b, k, dtype=torch.long, device=device)
        self.rows = torch.zeros(b, k, dtype=torch.long, device=device)

    def add(self, images: Tensor, scores: Tensor, seqs: Tensor, length: int, rows: Tensor) -> None:
        """Merge M candidates for each of A `images` (A,): scores (A, M) (-inf: not one),
        seqs (A, M, max_len), rows (A, M); all `length` words long."""
        k = self.scores.size(1)
        top, best = torch.cat([self.scores[images], scores], dim=1).topk(k, dim=1)  # (A, k)
        batch = torch.arange(images.numel(), device=images.device).unsqueeze(1)  # (A, 1)
        self.scores[images] = top
        self.seqs[images] = torch.cat([self.seqs[images], seqs], dim=1)[batch, best]
        lengths = torch.full_like(scores, length, dtype=torch.long)  # (A, M)
        self.lengths[images] = torch.cat([self.lengths[images], lengths], dim=1)[batch, best]
        self.rows[images] = torch.cat([self.rows[images], rows], dim=1)[batch, best]

    def result(self, n_best: int, alphas: _Alphas) -> Generation:
        lengths = self.lengths[:, :n_best]  # (B, n)
        t = int(lengths.max())
        attn = None
        if alphas.maps:
            b, n = lengths.shape
            attn = alphas.trace(lengths.reshape(-1), self.rows[:, :n_best].reshape(-1))
            attn = attn.view(b, n, t, -1)  # (B, n, T, L)
        return Generation(self.seqs[:, :n_best, :t], self.scores[:, :n_best], attn)


def _best_possible(alive: Tensor, t: int, max_len: int, length_penalty: float) -> Tensor:
    """(A,) upper bound on the score any running hypothesis (summed log-probs `alive`) can end
    with: its sum only falls, so the bound is its best sum at the most favourable length."""
    best = alive.max(dim=1).values  # (A,)
    return best / (max_len if length_penalty > 0 else t + 1) ** length_penalty


@torch.no_grad()
def beam_search(
    model: nn.Module,
    features: EncoderOutput | None,
    *,
    beam_size: int = 3,
    max_len: int = 20,
    length_penalty: float = 0.0,
    no_repeat_ngram_size: int = 0,
    n_best: int = 1,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    batch_size: int | None = None,
) -> Generation:
    """Beam search over all B images at once: B x beam_size running hypotheses in one tensor.

    The first step extends one hypothesis per image (the empty caption), every later step
    beam_size of them. At every step the 2 x beam_size best extensions per image are ranked; one that emits `<end>` within the
    first beam_size ranks becomes a finished hypothesis, and the best beam_size extensions that do
    not end keep searching (so a finished hypothesis frees its slot). An image is done when its
    n_best best finished hypotheses can no longer be beaten by any running one (a running
    hypothesis' score only falls), and then leaves the batch: its rows are dropped, so later
    steps cost less, and its answer is the one searching on would give. At ``max_len`` the
    running hypotheses of images not done compete with the finished ones, so every image always
    gets n_best answers.

    Scores follow Hugging Face: summed log-probabilities / ``length ** length_penalty``, where
    length counts the generated words including `<end>` (``max_len`` for a hypothesis cut off
    there). 0 ranks by summed log-probability (favours short captions); > 0 favours longer ones.

    Args:
        model: a CaptionModel or a decoder with the step contract.
        features: encoder output for B images (None for an image-free decoder).
        beam_size: running (and finished) hypotheses kept per image.
        max_len: most words per caption (`<end>` included).
        length_penalty: exponent of the length normalisation (see above).
        no_repeat_ngram_size: n > 0 forbids repeating any n-gram within a hypothesis.
        n_best: hypotheses returned per image (<= beam_size).
        bos_id: id fed at the first step.
        eos_id: id that finishes a hypothesis.
        pad_id: id written after `<end>`.
        batch_size: B when `features` is None.

    Returns:
        Generation with sequences (B, n_best, T), scores (B, n_best) sorted descending, and
        attention (B, n_best, T, L) (each hypothesis' own weights) for attention decoders.

    Raises:
        CaptioningError: a setting out of range, or n_best > beam_size
            (:meth:`DecodingSettings.checked`).
    """
    DecodingSettings(
        beam_size=beam_size,
        max_len=max_len,
        length_penalty=length_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        n_best=n_best,
    ).checked()
    decoder = decoder_of(model)
    state, b, device = start(decoder, features, batch_size)
    k, lp = beam_size, float(length_penalty)
    active = torch.arange(b, device=device)  # (A,) images still searching; rows follow them
    feats = rows_of(features, active)
    rank = torch.arange(2 * k, device=device)  # (2K,)
    tokens = torch.full((b,), bos_id, dtype=torch.long, device=device)
    # step 1 extends one hypothesis per image (the empty one); every later step k of them
    alive = torch.zeros(b, 1, device=device)  # (A, H) summed log-probs of running hypotheses
    seqs = torch.full((b, 1, max_len), pad_id, dtype=torch.long, device=device)  # (A, H, T)
    finished, alphas, parents = _Finished(b, k, max_len, pad_id, device), _Alphas(), None
    buffer: Tensor | None = None  # the scores of every extension
    never = never_emitted(bos_id, eos_id, pad_id, device)
    for t in range(1, max_len + 1):  # t = words generated after this step
        a, h = alive.shape
        logprobs, state, extras = step(decoder, tokens, state, feats, never)  # (A * H, V)
        if "alpha" in extras:
            alphas.push(extras["alpha"], parents)
        if no_repeat_ngram_size:
            history = seqs[:, :, : t - 1].reshape(a * h, t - 1)  # (A * H, t - 1)
            logprobs = ban_repeats(logprobs, history, no_repeat_ngram_size)
        v = logprobs.size(-1)
        if buffer is None:  # one (B * K * V) buffer, reused as the batch shrinks
            buffer = logprobs.new_empty(b * k * v)
        total = buffer[: a * h * v].view(a, h, v)  # (A, H, V)
        torch.add(alive.unsqueeze(2), logprobs.view(a, h, v), out=total)
        total = total.view(a, h * v)  # (A, H * V)
        if h * v < 2 * k:  # fewer extensions than candidates: the rest are impossible
            total = F.pad(total, (0, 2 * k - h * v), value=-math.inf)  # (A, 2K)
        top, flat = total.topk(2 * k, dim=1)  # (A, 2K) best first
        parent, word = (flat // v).clamp(max=h - 1), flat % v  # (A, 2K)
        batch = torch.arange(a, device=device).unsqueeze(1)  # (A, 1)
        rows = batch * h + parent  # (A, 2K) the row (of this step) each candidate extends
        cand = seqs[batch, parent]  # (A, 2K, max_len)
        cand[:, :, t - 1] = word
        ends = word == eos_id  # (A, 2K)
        finishing = ends & (rank < k) & (top > -math.inf)
        some = finishing.any(dim=1)  # (A,) images with a hypothesis finishing now
        if some.any():
            scores = top[some].masked_fill(~finishing[some], -math.inf) / t**lp  # (A', 2K)
            finished.add(active[some], scores, cand[some], t, rows[some])
        keep = (ends.long() * 2 * k + rank).argsort(dim=1)[:, :k]  # (A, K) best that go on
        alive, tokens = top.gather(1, keep), word.gather(1, keep)  # (A, K)
        rows, seqs = rows.gather(1, keep), cand[batch, keep]  # (A, K), (A, K, max_len)
        nth = finished.scores[active, n_best - 1]  # (A,) the n_best-th finished score
        going = (nth == -math.inf) | (nth < _best_possible(alive, t, max_len, lp))
        if not going.all():  # the images that are done leave the batch
            if not going.any():
                return finished.result(n_best, alphas)
            active, alive, tokens, seqs, rows = (
                x[going] for x in (active, alive, tokens, seqs, rows)
            )
        if t == max_len:
            break
        if h != k or not going.all():
            feats = rows_of(features, active.repeat_interleave(k))  # (A * K,) rows' images
        parents = rows.view(-1)  # (A * K,) the row each next-step row continues
        state = decoder.reorder_state(state, parents)
        tokens = tokens.view(-1)  # (A * K,)
    # max_len reached: running hypotheses of the images not done compete too
    finished.add(active, alive / max_len**lp, seqs, max_len, rows)
    return finished.result(n_best, alphas)
