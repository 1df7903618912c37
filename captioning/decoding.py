"""Search strategies over the decoder step contract, on whole batches at once.

Nothing here knows a model's internals: a decoder offers ``init_state``, ``step`` and
``reorder_state`` (DESIGN.md), and these functions drive it. Every function takes either a
``CaptionModel`` or a bare decoder, plus the encoder output of a batch of B images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from captioning.models.encoder import EncoderOutput

__all__ = ["Generation", "generate", "greedy"]


@dataclass
class Generation:
    """Decoded word ids with their scores.

    Attributes:
        sequences: (B, T) ids after `<start>`, `<end>` included when emitted, `<pad>` after it;
            (B, K, T) for strategies that return K sequences per image.
        scores: (B,) or (B, K) summed log-probabilities (beam search: length-normalised).
        attention: (B, T, L) or (B, K, T, L) attention weights where the decoder gives them.
    """

    sequences: Tensor
    scores: Tensor
    attention: Tensor | None = None


def _decoder(model: nn.Module) -> nn.Module:
    return model.decoder if hasattr(model, "decoder") and hasattr(model, "encoder") else model


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
    state = decoder.init_state(features) if features is not None else (
        decoder.init_state(None, batch_size=batch_size))
    n = features.vector.size(0) if features is not None else batch_size
    device = next(decoder.parameters()).device
    tokens = torch.full((n,), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    scores = torch.zeros(n, device=device)
    words, alphas = [], []
    for _ in range(max_len):
        logprobs, state, extras = decoder.step(tokens, state, features)  # (N, V)
        best, tokens = logprobs.max(dim=-1)  # (N,), (N,)
        tokens = tokens.masked_fill(finished, pad_id)
        scores += best.float().masked_fill(finished, 0.0)
        words.append(tokens)
        if "alpha" in extras:
            alphas.append(extras["alpha"].masked_fill(finished.unsqueeze(1), 0.0))  # (N, L)
        finished |= tokens == eos_id
        if finished.all():
            break
    attention = torch.stack(alphas, dim=1) if alphas else None  # (N, T, L)
    return Generation(torch.stack(words, dim=1), scores, attention)


def generate(
    model: nn.Module,
    features: EncoderOutput | None,
    *,
    max_len: int = 20,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
) -> Generation:
    """Decode with the strategy the arguments select (greedy for now)."""
    return greedy(model, features, max_len=max_len, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
