"""Generation: what every decoding strategy returns, K sequences per image, always (B, K, T)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Generation"]


@dataclass
class Generation:
    """Decoded word ids with their scores, K per image: K = 1 for greedy search and single
    samples, ``n_best`` for beam search, ``num_samples`` for sampling.

    Attributes:
        sequences: (B, K, T) ids after `<start>`, `<end>` included when emitted, `<pad>` after
            it; beam hypotheses best first, samples in the order drawn.
        scores: (B, K) summed log-probabilities (beam search: length-normalised).
        attention: (B, K, T, L) attention weights where the decoder gives them, zero after
            `<end>`; else None.
    """

    sequences: Tensor
    scores: Tensor
    attention: Tensor | None = None

    def best_first(self) -> Generation:
        """The same hypotheses, each image's K sorted by score, highest first: the one order
        in which captions are shown (``tools/caption.py``, the web page, ``Captioner.caption``).

        Beam search already returns them so (unchanged); samples come in the order drawn. Ties
        keep that order (a stable sort).

        Returns:
            A :class:`Generation` with ``sequences`` (B, K, T), ``scores`` (B, K) and
            ``attention`` (B, K, T, L) reordered along K.
        """
        order = self.scores.argsort(dim=1, descending=True, stable=True)  # (B, K)
        rows = torch.arange(order.size(0), device=order.device)[:, None]  # (B, 1)
        attention = self.attention[rows, order] if self.attention is not None else None
        return Generation(self.sequences[rows, order], self.scores[rows, order], attention)

    @property
    def best(self) -> Tensor:
        """(B, T) the first sequence of each image (beam search: the best one)."""
        return self.sequences[:, 0]

    @property
    def best_scores(self) -> Tensor:
        """(B,) the score of :attr:`best`."""
        return self.scores[:, 0]

    @property
    def best_attention(self) -> Tensor | None:
        """(B, T, L) the attention weights of :attr:`best`, or None."""
        return self.attention[:, 0] if self.attention is not None else None
