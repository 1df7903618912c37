"""Soft (additive) attention over a grid of region features (Xu et al. 2015, Show, Attend and Tell).

For regions ``a_i`` (i = 1..L) and the previous hidden state ``h_{t-1}``:

    e_ti    = w^T tanh(W_a a_i + W_h h_{t-1} + b)
    alpha_t = softmax_i(e_t)
    z_t     = sum_i alpha_ti a_i

Images with different numbers of regions (pre-extracted object features) come padded to one L
with a ``mask`` (M, L), ``True`` for real regions: the energies of padding are set to -inf
before the softmax, so padding gets a weight of exactly 0 and the real regions get the softmax
over the real regions alone (with one real region, exactly 1). An image's weights and context
are those of the same image without padding (up to float rounding).

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

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SoftAttention", "attention_penalty", "region_mean", "zero_padding"]

BLOCK_BYTES = 1 << 20  # size of the (rows, L, A) intermediate processed at once on the CPU


def region_mean(grid: Tensor, mask: Tensor | None) -> Tensor:
    """The mean of each image's real regions (padding left out).

    Args:
        grid: (M, L, D) region features.
        mask: (M, L) bool, ``True`` for real regions (at least one per row), or None (all real).

    Returns:
        (M, D) ``sum_i m_i v_i / sum_i m_i``.
    """
    if mask is None:
        return grid.mean(dim=1)  # (M, D)
    weights = mask.to(grid.dtype).unsqueeze(-1)  # (M, L, 1)
    return (grid * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)  # (M, D)


def zero_padding(grid: Tensor, mask: Tensor | None) -> Tensor:
    """`grid` (M, L, D) with its padded regions set to 0 (a copy; `grid` itself when `mask` is
    None), so that padding multiplied by its zero weight stays 0 whatever it held (NaN too)."""
    return grid if mask is None else grid.masked_fill(~mask.unsqueeze(-1), 0.0)


def attention_penalty(
    alphas: Tensor,
    lengths: Tensor,
    mask: Tensor | None = None,
    *,
    weight: float = 1.0,
    per: str = "caption",
) -> Tensor:
    """The doubly stochastic regulariser (Xu et al. eq. 14) of a batch, to add to its summed loss.

    Per caption, ``P = sum_i (1 - sum_t alpha_ti)^2`` pushes every region to receive, over
    the whole caption, about as much attention as any other; only the real steps of each
    row (t < length) and its real regions (``mask``) count. When a caption has T words and
    its image K real regions, P cannot reach zero unless T = K: its minimum, at uniform
    attention, is ``(K - T)^2 / K`` (e.g. 45 for K = 64, T = 10), a constant in the reported
    loss. The convention (`per`):

    * ``"caption"`` (the paper): ``weight * sum_b P_b``, each caption's penalty added once
      to its summed negative log-likelihood;
    * ``"word"``: ``weight * sum_b T_b P_b``, the penalty added to every word's loss, so it
      weighs about T times more than the paper's next to a cross-entropy summed over words.

    The target with a variable number of regions: every step's weights sum to 1 over the
    real regions, so ``sum_i s_i = T`` (``s_i = sum_t alpha_ti``), and for any target c,
    ``sum_i (c - s_i)^2 = sum_i s_i^2 - 2 c T + K c^2``: the target only shifts each
    caption's penalty by a constant, never its gradient. We keep the paper's c = 1 over the
    real regions (a full grid gives exactly the paper's value; a padded image exactly its
    unpadded value). "Equal attention to every region", c = T / K, would make the minimum 0
    but change no gradient. Padding is left out, not given target 1: its s_i is exactly 0,
    and counting it would add 1 per padded region to the reported loss.

    Args:
        alphas: (B, T, L) attention weights (a decoder's ``forward(..., return_alphas=True)``).
        lengths: (B,) real steps per row.
        mask: (B, L) bool, ``True`` for real regions (None: all L are real).
        weight: lambda (a decoder's ``alpha_c``).
        per: ``"caption"`` or ``"word"`` (a decoder's ``alpha_c_per``).

    Returns:
        A scalar to add to the batch's loss summed over target words.
    """
    t_max = alphas.size(1)
    lengths = lengths.to(alphas.device)
    steps = torch.arange(t_max, device=alphas.device) < lengths.unsqueeze(1)  # (B, T)
    total = (alphas * steps.unsqueeze(-1)).sum(dim=1)  # (B, L) attention each region received
    gap = (1.0 - total) ** 2  # (B, L)
    if mask is not None:
        gap = gap * mask.to(device=gap.device, dtype=gap.dtype)
    per_caption = gap.sum(dim=1)  # (B,)
    if per == "word":
        per_caption = per_caption * lengths.to(per_caption.dtype)
    return weight * per_caption.sum()


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
        self,
        projected: Tensor,
        grid: Tensor,
        hidden: Tensor,
        image: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Attend over the regions given the previous hidden state.

        Args:
            projected: (M, L, A) the output of :meth:`project`, one per image.
            grid: (M, L, D_g) the region features ``a_i`` of the same images.
            hidden: (N, H) the previous hidden state ``h_{t-1}`` of each row.
            image: (N,) the image of each row; None when row n is image n (N == M).
            mask: (M, L) bool, ``True`` for real regions, or None when all L are real. Padded
                regions must hold finite values (they are multiplied by their weight, 0).

        Returns:
            context ``z_t`` (N, D_g) and weights ``alpha_t`` (N, L), non-negative, summing to 1,
            exactly 0 on padding.
        """
        query = self.hidden_proj(hidden)  # (N, A)
        needs_grad = torch.is_grad_enabled() and (projected.requires_grad or query.requires_grad)
        if hidden.device.type == "cpu" and not needs_grad:
            return self._blockwise(projected, grid, query, image, mask)
        if image is not None:
            projected, grid = projected.index_select(0, image), grid.index_select(0, image)
            mask = mask.index_select(0, image) if mask is not None else None
        energies = self.energies(projected + query.unsqueeze(1))  # (N, L)
        if mask is not None:
            energies = energies.masked_fill(~mask, -math.inf)
        alpha = energies.softmax(dim=1)  # (N, L)
        context = torch.bmm(alpha.unsqueeze(1), grid).squeeze(1)  # (N, D_g)
        return context, alpha

    def _blockwise(
        self,
        projected: Tensor,
        grid: Tensor,
        query: Tensor,
        image: Tensor | None,
        mask: Tensor | None,
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
            if mask is not None:
                real = _images(mask, ids, block).unsqueeze(1)  # (b, 1, L)
                energies = energies.masked_fill_(~real, -math.inf)
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
