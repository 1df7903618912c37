"""Soft (additive) attention over a grid of region features (Xu et al. 2015, Show, Attend and Tell).

For regions ``a_i`` (i = 1..L) and the previous hidden state ``h_{t-1}``:

    e_ti    = w^T tanh(W_a a_i + W_h h_{t-1} + b)
    alpha_t = softmax_i(e_t)
    z_t     = sum_i alpha_ti a_i

``W_a a_i + b`` does not depend on t, so :meth:`SoftAttention.project` computes it once per image
and every step reuses it; only the cheap ``W_h h_{t-1}`` term is computed per step.

Two exact rewrites make a step cheap; neither changes the function:

* ``tanh(x) = 2 sigmoid(2x) - 1``, so ``e_ti = 2 w^T sigmoid(2 x_ti) - sum(w)``, and the constant
  drops out of the softmax over regions. PyTorch's CPU ``sigmoid`` is about 10x faster than its
  ``tanh``, and this elementwise term (rows x L x A per step) is most of the attention's work.
* Rows may share an image (beam hypotheses, sampled captions): the projected grid stays one per
  image and rows point at it through an ``image`` index, so reordering rows never copies it. When
  no gradient is needed on the CPU, rows are processed in blocks small enough that the
  (rows, L, A) intermediate stays in cache instead of travelling to memory and back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SoftAttention"]

BLOCK_BYTES = 1 << 20  # size of the (rows, L, A) intermediate processed at once on the CPU


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
            grid: (M, L, D_g) region features.

        Returns:
            (M, L, A) projected regions.
        """
        return self.grid_proj(grid)

    def energies(self, joint: Tensor) -> Tensor:
        """``w^T tanh(joint)`` over the last dim, up to a constant per row (see the module doc).

        Args:
            joint: (..., L, A) ``W_a a_i + W_h h + b``; overwritten (it is a temporary).

        Returns:
            (..., L) scores whose softmax over L is the attention.
        """
        return self.score(joint.mul_(2).sigmoid_()).squeeze(-1).mul(2)  # (..., L)

    def forward(
        self, projected: Tensor, grid: Tensor, hidden: Tensor, image: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Attend over the regions given the previous hidden state.

        Args:
            projected: (M, L, A) the output of :meth:`project`, one per image.
            grid: (M, L, D_g) the region features ``a_i`` of the same images.
            hidden: (N, H) the previous hidden state ``h_{t-1}`` of each row.
            image: (N,) the image of each row; None when row n is image n (N == M).

        Returns:
            context ``z_t`` (N, D_g) and weights ``alpha_t`` (N, L), non-negative, summing to 1.
        """
        query = self.hidden_proj(hidden)  # (N, A)
        needs_grad = torch.is_grad_enabled() and (projected.requires_grad or query.requires_grad)
        if hidden.device.type == "cpu" and not needs_grad:
            return self._blockwise(projected, grid, query, image)
        if image is not None:
            projected, grid = projected.index_select(0, image), grid.index_select(0, image)
        alpha = self.energies(projected + query.unsqueeze(1)).softmax(dim=1)  # (N, L)
        context = torch.bmm(alpha.unsqueeze(1), grid).squeeze(1)  # (N, D_g)
        return context, alpha

    def _blockwise(
        self, projected: Tensor, grid: Tensor, query: Tensor, image: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward` without autograd, a cache-sized block of images at a time. The k rows
        of an image that sit together (beam hypotheses) share its projected grid by broadcasting,
        and an image's tensors are read in place (a view), never copied.

        The factors 2 of :meth:`energies` go into the (k times smaller) operands instead of the
        (k, L, A) intermediate: ``2 x = 2 W_h h + 2 (W_a a + b)`` and ``2 w^T s = (2 w)^T s``,
        both exact in floating point (scaling by 2 only changes the exponent)."""
        n, (_, regions, dim) = query.size(0), projected.shape
        groups, k = _row_groups(image, n)  # group j: rows j*k .. j*k+k-1, all of image groups[j]
        per = max(1, BLOCK_BYTES // (k * regions * dim * projected.element_size()))
        q = (2 * query).view(n // k, k, 1, -1)  # (G, k, 1, A)
        score = 2 * self.score.weight  # (1, A)
        alpha = query.new_empty(n // k, k, regions)  # (G, k, L)
        context = grid.new_empty(n // k, k, grid.size(-1))  # (G, k, D_g)
        ids = groups.tolist() if groups is not None else None
        joint = query.new_empty(min(per, n // k), k, regions, dim)  # (b, k, L, A) reused
        for start in range(0, n // k, per):
            block = slice(start, start + per)
            proj, regs = _images(projected, ids, block), _images(grid, ids, block)
            part = joint[: proj.size(0)]  # (b, k, L, A)
            torch.add(q[block], proj.unsqueeze(1), alpha=2, out=part)  # 2 (W_a a + b + W_h h)
            energies = F.linear(part.sigmoid_(), score).squeeze(-1)  # (b, k, L)
            weights = energies.softmax(dim=-1)  # (b, k, L)
            alpha[block] = weights
            torch.bmm(weights, regs, out=context[block])  # (b, k, D_g)
        return context.view(n, -1), alpha.view(n, regions)


def _images(x: Tensor, ids: list[int] | None, block: slice) -> Tensor:
    """Images `ids[block]` of `x` (M, ...) (all of `block` when `ids` is None): a view when
    they are consecutive, else a gathered copy."""
    if ids is None:
        return x[block]
    chosen = ids[block]
    first = chosen[0]
    if chosen == list(range(first, first + len(chosen))):
        return x[first : first + len(chosen)]
    return x.index_select(0, torch.tensor(chosen, device=x.device))


def _row_groups(image: Tensor | None, n: int) -> tuple[Tensor | None, int]:
    """Split N rows into groups of k consecutive rows of one image.

    Returns:
        (the image of each group (N / k,), k), or (None, 1) when row n is image n.
    """
    if image is None or n == 0:
        return image, 1
    other = (image != image[0]).nonzero()
    k = int(other[0]) if other.numel() else n  # length of the first run
    if n % k == 0:
        runs = image.view(-1, k)  # (G, k)
        if bool((runs == runs[:, :1]).all()):
            return runs[:, 0], k
    return image, 1
