"""Soft (additive) attention over a grid of region features (Xu et al. 2015, Show, Attend and Tell).

For regions ``a_i`` (i = 1..L) and the previous hidden state ``h_{t-1}``:

    e_ti    = w^T tanh(W_a a_i + W_h h_{t-1} + b)
    alpha_t = softmax_i(e_t)
    z_t     = sum_i alpha_ti a_i

``W_a a_i + b`` does not depend on t, so :meth:`SoftAttention.project` computes it once per image
and every step reuses it; only the cheap ``W_h h_{t-1}`` term is computed per step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SoftAttention"]


class SoftAttention(nn.Module):
    """Additive attention of Bahdanau et al. as used by Show, Attend and Tell.

    Args:
        grid_dim: size D_g of each region feature ``a_i``.
        hidden_dim: size H of the decoder state ``h_{t-1}``.
        attention_dim: size A of the joint space where regions and state meet.
    """

    def __init__(self, grid_dim: int, hidden_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.grid_proj = nn.Linear(grid_dim, attention_dim)  # W_a a_i + b
        self.hidden_proj = nn.Linear(hidden_dim, attention_dim, bias=False)  # W_h h_{t-1}
        self.score = nn.Linear(attention_dim, 1, bias=False)  # w^T (a bias cancels in softmax)

    def project(self, grid: Tensor) -> Tensor:
        """``W_a a_i + b`` for every region; compute once per image, reuse at every step.

        Args:
            grid: (N, L, D_g) region features.

        Returns:
            (N, L, A) projected regions.
        """
        return self.grid_proj(grid)

    def forward(self, projected: Tensor, grid: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Attend over the regions given the previous hidden state.

        Args:
            projected: (N, L, A) the output of :meth:`project` for these rows.
            grid: (N, L, D_g) the region features ``a_i``.
            hidden: (N, H) the previous hidden state ``h_{t-1}``.

        Returns:
            context ``z_t`` (N, D_g) and weights ``alpha_t`` (N, L), non-negative, summing to 1.
        """
        query = self.hidden_proj(hidden).unsqueeze(1)  # (N, 1, A)
        scores = self.score(torch.tanh(projected + query)).squeeze(-1)  # (N, L)
        alpha = scores.softmax(dim=1)  # (N, L)
        context = torch.bmm(alpha.unsqueeze(1), grid).squeeze(1)  # (N, D_g)
        return context, alpha
