"""Greedy search and ancestral sampling: one word per running row per step, on whole batches.

Nothing here knows a model's internals: a decoder offers ``init_state``, ``step`` and
``reorder_state`` (:class:`captioning.contracts.CaptionDecoder`), and these functions drive it.
Both take either a ``CaptionModel`` or a bare decoder, plus the encoder output of a batch of B
images (or ``None`` and ``batch_size=B`` for an image-free decoder), and share one rollout loop.

* :func:`greedy`: the most likely word at every step.
* :func:`sample`: ancestral sampling (as in min-char-rnn), with temperature and top-k.

A row stops growing at `<end>` and gets `<pad>` after it; a row that never emits `<end>` gets
``max_len`` words, so decoding never fails for want of an `<end>`. ``no_repeat_ngram_size=n``
sets the log-probability of every word that would complete an n-gram already in the row's words
to -inf (all rows at once: the row's n-grams are compared with its last n - 1 words). A row
leaves the working batch at its `<end>` (:mod:`captioning.decoding.rows`), so a batch costs what
its words cost, not what its longest caption costs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from captioning.contracts import CaptionDecoder, EncoderOutput
from captioning.decoding.result import Generation
from captioning.decoding.rows import (
    RowFeatures,
    ban_repeats,
    decoder_of,
    never_emitted,
    rows_of,
    start,
    step,
)
from captioning.decoding.settings import DecodingSettings

__all__ = ["greedy", "sample"]


def _rollout(
    decoder: CaptionDecoder,
    features: RowFeatures | None,
    state: Any,
    rows: tuple[int, torch.device],
    pick: Callable[[Tensor], Tensor],
    no_repeat_ngram_size: int,
    ids: dict[str, int],
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One word per running row per step for N `rows` (N, device), chosen by
    `pick(logprobs (A, V))` for the A rows still running; a row leaves the batch at `<end>`.
    Returns sequences (N, T), scores (N,) and attention (N, T, L) or None."""
    (n, device), max_len, eos_id, pad_id = rows, ids["max_len"], ids["eos_id"], ids["pad_id"]
    tokens = torch.full((n,), ids["bos_id"], dtype=torch.long, device=device)
    live = torch.arange(n, device=device)  # (A,) the rows still running
    seqs = torch.full((n, max_len), pad_id, dtype=torch.long, device=device)
    scores = torch.zeros(n, device=device)
    attention = None  # (N, max_len, L) once the decoder gives alphas
    never = never_emitted(ids["bos_id"], eos_id, pad_id, device)
    for t in range(max_len):
        logprobs, state, extras = step(decoder, tokens, state, features, never)  # (A, V)
        if no_repeat_ngram_size and t:
            logprobs = ban_repeats(logprobs, seqs[live, :t], no_repeat_ngram_size)
        tokens = pick(logprobs)  # (A,)
        scores[live] += logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1).float()
        seqs[live, t] = tokens
        if "alpha" in extras:
            alpha = extras["alpha"]  # (A, L)
            if attention is None:
                attention = alpha.new_zeros(n, max_len, alpha.size(-1))
            attention[live, t] = alpha
        going = tokens != eos_id  # (A,)
        running = int(going.sum())  # the step's one read from the device: rows that go on
        if running < going.numel():
            if running == 0:
                break
            index = going.nonzero().squeeze(1)  # (A',) rows that go on
            live, tokens = live[index], tokens[index]
            state = decoder.reorder_state(state, index)
            features = features.select(index) if features is not None else None
    steps = t + 1
    attention = attention[:, :steps] if attention is not None else None  # (N, T, L)
    return seqs[:, :steps], scores, attention


def _per_image(b: int, k: int, decoded: tuple[Tensor, Tensor, Tensor | None]) -> Generation:
    """The (B * K, ...) rows of a rollout, K consecutive rows per image, as (B, K, ...)."""
    seqs, scores, attention = decoded
    t = seqs.size(1)
    if attention is not None:
        attention = attention.view(b, k, t, -1)  # (B, K, T, L)
    return Generation(seqs.view(b, k, t), scores.view(b, k), attention)


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
        Generation with sequences (B, 1, T<=max_len), scores (B, 1), attention (B, 1, T, L) or
        None.

    Raises:
        CaptioningError: max_len < 1.
    """
    DecodingSettings(max_len=max_len).checked()
    decoder = decoder_of(model)
    state, n, device = start(decoder, features, batch_size)
    feats = rows_of(features, torch.arange(n, device=device))
    ids = dict(max_len=max_len, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    decoded = _rollout(decoder, feats, state, (n, device), lambda lp: lp.argmax(dim=-1), 0, ids)
    return _per_image(n, 1, decoded)


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

    Each step draws only for the captions still running (finished ones leave the batch), so the
    same `generator` seed gives the same captions run after run (but not the ones it gave
    before finished captions left the batch: those versions drew for finished rows too).

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
        Generation with sequences (B, num_samples, T), scores (B, num_samples): the summed
        log-probabilities of the drawn words under the model (temperature 1), and attention
        (B, num_samples, T, L) where the decoder gives it.

    Raises:
        CaptioningError: a setting out of range (:meth:`DecodingSettings.checked`).
    """
    DecodingSettings(
        max_len=max_len,
        no_repeat_ngram_size=no_repeat_ngram_size,
        sample=True,
        temperature=temperature,
        top_k=top_k,
        num_samples=num_samples,
    ).checked()
    decoder, ngram = decoder_of(model), no_repeat_ngram_size
    state, b, device = start(decoder, features, batch_size)
    rows = torch.arange(b, device=device).repeat_interleave(num_samples)  # (B * K,)
    if num_samples > 1:
        state = decoder.reorder_state(state, rows)
    feats = rows_of(features, rows)

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
    decoded = _rollout(decoder, feats, state, (b * num_samples, device), pick, ngram, ids)
    return _per_image(b, num_samples, decoded)
