"""Search strategies over the decoder step contract, on whole batches at once.

Nothing here knows a model's internals: a decoder offers ``init_state``, ``step`` and
``reorder_state`` (DESIGN.md), and these functions drive it. Every function takes either a
``CaptionModel`` or a bare decoder, plus the encoder output of a batch of B images (or ``None``
and ``batch_size=B`` for an image-free decoder).

* :func:`greedy`: the most likely word at every step.
* :func:`sample`: ancestral sampling (as in min-char-rnn), with temperature and top-k.
* :func:`beam_search`: B x beam_size hypotheses in one tensor, n-best lists, length penalty.
* :func:`generate`: picks one of them from Hugging Face ``generate``-style arguments.

A row stops growing at `<end>` and gets `<pad>` after it; a row that never emits `<end>` gets
``max_len`` words, so decoding never fails for want of an `<end>`. ``no_repeat_ngram_size=n``
sets the log-probability of every word that would complete an n-gram already in the row's words
to -inf (all rows at once: the row's n-grams are compared with its last n - 1 words).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from captioning.contracts import EncoderOutput
from captioning.errors import CaptioningError

__all__ = ["Generation", "beam_search", "generate", "greedy", "sample"]


@dataclass
class Generation:
    """Decoded word ids with their scores.

    Attributes:
        sequences: (B, T) ids after `<start>`, `<end>` included when emitted, `<pad>` after it;
            (B, K, T) for strategies that return K sequences per image (beam search always).
        scores: (B,) or (B, K) summed log-probabilities (beam search: length-normalised).
        attention: (B, T, L) or (B, K, T, L) attention weights where the decoder gives them,
            zero after `<end>`.
    """

    sequences: Tensor
    scores: Tensor
    attention: Tensor | None = None


def _decoder(model: nn.Module) -> nn.Module:
    return model.decoder if hasattr(model, "decoder") and hasattr(model, "encoder") else model


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise CaptioningError(message)


def _start(
    decoder: nn.Module,
    features: EncoderOutput | None,
    batch_size: int | None,
    max_len: int,
    no_repeat_ngram_size: int,
) -> tuple[Any, int, torch.device]:
    """Check the shared arguments; return the initial state, B and the device."""
    _require(max_len >= 1, f"max_len must be >= 1, got {max_len}")
    _require(
        no_repeat_ngram_size >= 0,
        f"no_repeat_ngram_size must be >= 0 (0 = off), got {no_repeat_ngram_size}",
    )
    if features is not None:
        return decoder.init_state(features), features.vector.size(0), features.vector.device
    _require(batch_size is not None, "an image-free decoder needs batch_size= to start decoding")
    device = next(decoder.parameters()).device
    return decoder.init_state(None, batch_size=batch_size), batch_size, device


def _ban_repeats(logprobs: Tensor, history: Tensor, n: int) -> Tensor:
    """-inf for every word that would repeat an n-gram of `history` (N, t); logprobs (N, V)."""
    t, v = history.size(1), logprobs.size(-1)
    if t < n:
        return logprobs
    windows = history.unfold(1, n, 1)  # (N, t - n + 1, n) every n-gram so far
    prefix = history[:, t - n + 1 :].unsqueeze(1)  # (N, 1, n - 1) the words the next one follows
    seen = (windows[..., :-1] == prefix).all(dim=-1)  # (N, W)
    banned = windows[..., -1].masked_fill(~seen, v)  # (N, W); column v means "nothing"
    mask = logprobs.new_zeros(logprobs.size(0), v + 1, dtype=torch.bool)
    mask.scatter_(1, banned, True)  # (N, V + 1)
    return logprobs.masked_fill(mask[:, :v], -math.inf)


def _rollout(
    decoder: nn.Module,
    features: EncoderOutput | None,
    state: Any,
    rows: tuple[int, torch.device],
    pick: Callable[[Tensor], Tensor],
    no_repeat_ngram_size: int,
    ids: dict[str, int],
) -> Generation:
    """One word per row per step for N `rows` (N, device), chosen by `pick(logprobs (N, V))`."""
    (n, device), max_len, eos_id, pad_id = rows, ids["max_len"], ids["eos_id"], ids["pad_id"]
    tokens = torch.full((n,), ids["bos_id"], dtype=torch.long, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    scores = torch.zeros(n, device=device)
    words, alphas = [], []
    for _ in range(max_len):
        logprobs, state, extras = decoder.step(tokens, state, features)  # (N, V)
        if no_repeat_ngram_size and words:
            logprobs = _ban_repeats(logprobs, torch.stack(words, dim=1), no_repeat_ngram_size)
        tokens = pick(logprobs).masked_fill(finished, pad_id)  # (N,)
        chosen = logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1)  # (N,)
        scores += chosen.float().masked_fill(finished, 0.0)
        words.append(tokens)
        if "alpha" in extras:
            alphas.append(extras["alpha"].masked_fill(finished.unsqueeze(1), 0.0))  # (N, L)
        finished |= tokens == eos_id
        if finished.all():
            break
    attention = torch.stack(alphas, dim=1) if alphas else None  # (N, T, L)
    return Generation(torch.stack(words, dim=1), scores, attention)


@torch.no_grad()
def greedy(
    model: nn.Module,
    features: EncoderOutput | None,
    *,
    max_len: int = 20,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    batch_size: int | None = None,
) -> Generation:
    """Pick the most likely word at every step.

    Args:
        model: a CaptionModel or a decoder with the step contract.
        features: encoder output for B images (None for an image-free decoder).
        max_len: most words generated per image (`<end>` included).
        bos_id: id fed at the first step.
        eos_id: id that finishes a sequence; finished rows are padded from then on.
        pad_id: id written after `<end>`.
        batch_size: B when `features` is None.

    Returns:
        Generation with sequences (B, T<=max_len), scores (B,), attention (B, T, L) or None.
    """
    decoder = _decoder(model)
    state, n, device = _start(decoder, features, batch_size, max_len, 0)
    ids = dict(max_len=max_len, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    return _rollout(decoder, features, state, (n, device), lambda lp: lp.argmax(dim=-1), 0, ids)


@torch.no_grad()
def sample(
    model: nn.Module,
    features: EncoderOutput | None,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    num_samples: int = 1,
    max_len: int = 20,
    generator: torch.Generator | None = None,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    batch_size: int | None = None,
    no_repeat_ngram_size: int = 0,
) -> Generation:
    """Draw each word from the model's distribution, p(w) ∝ exp(log p(w) / temperature).

    ``temperature == 0`` is argmax (greedy); tiny temperatures give greedy's words too (the
    log-probabilities are shifted by their maximum before dividing, so nothing overflows).

    Args:
        model: a CaptionModel or a decoder with the step contract.
        features: encoder output for B images (None for an image-free decoder).
        temperature: > 1 flattens, < 1 sharpens the distribution; 0 is greedy.
        top_k: draw only among the k most likely words (None: all words).
        num_samples: captions drawn per image.
        max_len: most words generated per caption (`<end>` included).
        generator: a ``torch.Generator`` on the model's device, for reproducible draws.
        bos_id: id fed at the first step.
        eos_id: id that finishes a sequence.
        pad_id: id written after `<end>`.
        batch_size: B when `features` is None.
        no_repeat_ngram_size: n > 0 forbids repeating any n-gram within a caption.

    Returns:
        Generation with sequences (B, T) (or (B, num_samples, T) when num_samples > 1), scores:
        the summed log-probabilities of the drawn words under the model (temperature 1), and
        attention (B[, num_samples], T, L) where the decoder gives it.
    """
    _require(temperature >= 0, f"temperature must be >= 0 (0 = greedy), got {temperature}")
    _require(top_k is None or top_k >= 1, f"top_k must be >= 1 or None, got {top_k}")
    _require(num_samples >= 1, f"num_samples must be >= 1, got {num_samples}")
    decoder, ngram = _decoder(model), no_repeat_ngram_size
    state, b, device = _start(decoder, features, batch_size, max_len, ngram)
    if num_samples > 1:
        rows = torch.arange(b, device=device).repeat_interleave(num_samples)  # (B * K,)
        state = decoder.reorder_state(state, rows)
        features = features.select(rows) if features is not None else None

    def pick(logprobs: Tensor) -> Tensor:
        if temperature == 0:
            return logprobs.argmax(dim=-1)
        scaled = (logprobs - logprobs.amax(dim=-1, keepdim=True)) / temperature  # (N, V)
        if top_k is not None and top_k < scaled.size(-1):
            kth = scaled.topk(top_k, dim=-1).values[:, -1:]  # (N, 1)
            scaled = scaled.masked_fill(scaled < kth, -math.inf)
        probs = scaled.float().softmax(dim=-1)  # (N, V)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (N,)

    ids = dict(max_len=max_len, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    gen = _rollout(decoder, features, state, (b * num_samples, device), pick, ngram, ids)
    if num_samples == 1:
        return gen
    seqs, scores, attention = gen.sequences, gen.scores, gen.attention
    t = seqs.size(1)
    if attention is not None:
        attention = attention.view(b, num_samples, t, -1)  # (B, K, T, L)
    return Generation(seqs.view(b, num_samples, t), scores.view(b, num_samples), attention)


_sample = sample  # generate() has an argument named `sample`


class _Finished:
    """The best `k` finished hypotheses of each of B images, best first (beam search)."""

    def __init__(self, b: int, k: int, max_len: int, pad_id: int, device: torch.device) -> None:
        self.scores = torch.full((b, k), -math.inf, device=device)
        self.seqs = torch.full((b, k, max_len), pad_id, dtype=torch.long, device=device)
        self.lengths = torch.zeros(b, k, dtype=torch.long, device=device)
        self.attn: Tensor | None = None  # (B, k, max_len, L)

    def add(
        self, images: Tensor, scores: Tensor, seqs: Tensor, length: int, attn: Tensor | None
    ) -> None:
        """Merge M candidates for each of A `images` (A,): scores (A, M) (-inf: not one),
        seqs (A, M, max_len), attn (A, M, max_len, L) or None; all `length` words long."""
        k = self.scores.size(1)
        top, best = torch.cat([self.scores[images], scores], dim=1).topk(k, dim=1)  # (A, k)
        batch = torch.arange(images.numel(), device=images.device).unsqueeze(1)  # (A, 1)
        self.scores[images] = top
        self.seqs[images] = torch.cat([self.seqs[images], seqs], dim=1)[batch, best]
        lengths = torch.full_like(scores, length, dtype=torch.long)  # (A, M)
        self.lengths[images] = torch.cat([self.lengths[images], lengths], dim=1)[batch, best]
        if attn is not None:
            if self.attn is None:
                self.attn = attn.new_zeros(self.seqs.shape + attn.shape[-1:])  # (B, k, T, L)
            self.attn[images] = torch.cat([self.attn[images], attn], dim=1)[batch, best]

    def result(self, n_best: int) -> Generation:
        t = int(self.lengths[:, :n_best].max())
        attn = self.attn[:, :n_best, :t] if self.attn is not None else None  # (B, n, T, L)
        return Generation(self.seqs[:, :n_best, :t], self.scores[:, :n_best], attn)


def _best_possible(alive: Tensor, t: int, max_len: int, length_penalty: float) -> Tensor:
    """(B,) upper bound on the score any running hypothesis (summed log-probs `alive`) can end
    with: its sum only falls, so the bound is its best sum at the most favourable length."""
    best = alive.max(dim=1).values  # (B,)
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

    Step 0 expands one hypothesis per image (the beam_size - 1 copies start at -inf). At every
    step the 2 x beam_size best extensions per image are ranked; one that emits `<end>` within the
    first beam_size ranks becomes a finished hypothesis, and the best beam_size extensions that do
    not end keep searching (so a finished hypothesis frees its slot). An image is done when it has
    beam_size finished hypotheses and no running one can still beat the worst of them, and then
    leaves the batch (its rows are dropped, so later steps cost less); at ``max_len`` the running
    hypotheses of images not done compete with the finished ones, so every image always gets
    n_best answers.

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
    """
    _require(beam_size >= 1, f"beam_size must be >= 1, got {beam_size}")
    _require(1 <= n_best <= beam_size, f"n_best must be in 1..beam_size={beam_size}, got {n_best}")
    decoder = _decoder(model)
    state, b, device = _start(decoder, features, batch_size, max_len, no_repeat_ngram_size)
    k, lp = beam_size, float(length_penalty)
    rows = torch.arange(b, device=device).repeat_interleave(k)  # (B * K,) image of each row
    state = decoder.reorder_state(state, rows)
    feats = features.select(rows) if features is not None else None  # expanded once
    rank = torch.arange(2 * k, device=device)  # (2K,)
    active = torch.arange(b, device=device)  # (A,) images still searching; rows follow them
    tokens = torch.full((b * k,), bos_id, dtype=torch.long, device=device)
    alive = torch.zeros(b, k, device=device)  # (A, K) summed log-probs of running hypotheses
    alive[:, 1:] = -math.inf  # step 0: one hypothesis per image, not k copies of it
    seqs = torch.full((b, k, max_len), pad_id, dtype=torch.long, device=device)  # (A, K, T)
    attn = None  # (A, K, max_len, L) once the decoder gives alphas
    finished = _Finished(b, k, max_len, pad_id, device)
    for t in range(1, max_len + 1):  # t = words generated after this step
        a = active.numel()
        logprobs, state, extras = decoder.step(tokens, state, feats)  # (A * K, V)
        if no_repeat_ngram_size:
            history = seqs[:, :, : t - 1].reshape(a * k, t - 1)  # (A * K, t - 1)
            logprobs = _ban_repeats(logprobs, history, no_repeat_ngram_size)
        v = logprobs.size(-1)
        total = alive.unsqueeze(2) + logprobs.view(a, k, v)  # (A, K, V)
        top, flat = total.view(a, k * v).topk(2 * k, dim=1)  # (A, 2K) best first
        parent, word = flat // v, flat % v  # (A, 2K)
        batch = torch.arange(a, device=device).unsqueeze(1)  # (A, 1)
        cand = seqs[batch, parent]  # (A, 2K, max_len)
        cand[:, :, t - 1] = word
        cand_attn = None
        if "alpha" in extras:
            alpha = extras["alpha"].view(a, k, -1)  # (A, K, L)
            attn = attn if attn is not None else alpha.new_zeros(a, k, max_len, alpha.size(-1))
            cand_attn = attn[batch, parent]  # (A, 2K, max_len, L)
            cand_attn[:, :, t - 1] = alpha[batch, parent]
        ends = word == eos_id  # (A, 2K)
        finishing = ends & (rank < k) & (top > -math.inf)
        if finishing.any():
            finished.add(active, top.masked_fill(~finishing, -math.inf) / t**lp, cand, t, cand_attn)
        keep = (ends.long() * 2 * k + rank).argsort(dim=1)[:, :k]  # (A, K) best that go on
        alive, tokens = top.gather(1, keep), word.gather(1, keep)  # (A, K)
        rows = batch * k + parent.gather(1, keep)  # (A, K) state row each one continues
        seqs = cand[batch, keep]  # (A, K, max_len)
        attn = cand_attn[batch, keep] if cand_attn is not None else None
        worst = finished.scores[active, -1]  # (A,)
        going = (worst == -math.inf) | (worst < _best_possible(alive, t, max_len, lp))
        if not going.all():  # drop the images that are done from the batch
            if not going.any():
                break
            active, alive, tokens = active[going], alive[going], tokens[going]
            seqs, rows = seqs[going], rows[going]
            attn = attn[going] if attn is not None else None
            feats = feats.select(rows.view(-1)) if feats is not None else None
        state = decoder.reorder_state(state, rows.view(-1))
        tokens = tokens.view(-1)  # (A * K,)
    else:  # max_len reached: running hypotheses of the images not done compete too
        finished.add(active, alive / max_len**lp, seqs, max_len, attn)
    return finished.result(n_best)


def generate(
    model: nn.Module,
    features: EncoderOutput | None,
    *,
    beam_size: int = 1,
    sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    num_samples: int = 1,
    max_len: int = 20,
    length_penalty: float = 0.0,
    no_repeat_ngram_size: int = 0,
    n_best: int = 1,
    generator: torch.Generator | None = None,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    batch_size: int | None = None,
) -> Generation:
    """Decode with the strategy the arguments select (Hugging Face ``generate`` names).

    ``sample=True``: :func:`sample` (``temperature``, ``top_k``, ``num_samples``, ``generator``;
    needs beam_size = n_best = 1). Otherwise :func:`greedy` when beam_size == 1 and
    length_penalty, no_repeat_ngram_size and n_best keep their defaults, else
    :func:`beam_search` (whose beam_size=1 gives greedy's words, as a (B, 1, T) tensor).
    ``temperature`` and ``top_k`` are ignored unless sampling.

    Args:
        model: a CaptionModel or a decoder with the step contract.
        features: encoder output for B images (None for an image-free decoder).
        beam_size: hypotheses kept per image (1: greedy).
        sample: draw words instead of searching.
        temperature: sampling temperature (0 = greedy).
        top_k: sample among the k most likely words.
        num_samples: captions drawn per image when sampling.
        max_len: most words per caption (`<end>` included).
        length_penalty: beam score = summed log-probs / length ** length_penalty.
        no_repeat_ngram_size: n > 0 forbids repeating any n-gram within a caption.
        n_best: beam hypotheses returned per image.
        generator: random generator for sampling.
        bos_id: id fed at the first step.
        eos_id: id that finishes a caption.
        pad_id: id written after `<end>`.
        batch_size: B when `features` is None.

    Returns:
        The strategy's :class:`Generation`: sequences (B, T) for greedy and single samples,
        (B, K, T) for beam search and num_samples > 1; take ``[:, 0]`` for the best/first one.
    """
    ids: dict[str, Any] = dict(
        max_len=max_len, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, batch_size=batch_size
    )
    if sample:
        _require(
            beam_size == 1 and n_best == 1,
            "sampling draws num_samples captions per image: use beam_size=1 and n_best=1 "
            "with sample=True (or sample=False for beam search)",
        )
        ids.update(num_samples=num_samples, generator=generator)
        ids.update(no_repeat_ngram_size=no_repeat_ngram_size)
        return _sample(model, features, temperature=temperature, top_k=top_k, **ids)
    _require(num_samples == 1, f"num_samples={num_samples} needs sample=True")
    if beam_size == 1 and n_best == 1 and no_repeat_ngram_size == 0 and length_penalty == 0:
        return greedy(model, features, **ids)
    ids.update(length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    return beam_search(model, features, beam_size=beam_size, n_best=n_best, **ids)
