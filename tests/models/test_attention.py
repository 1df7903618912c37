"""Soft attention (captioning.models.attention): the formula, blockwise CPU pass, region masks,
the masked mean and the doubly stochastic regulariser over real regions."""

import pytest
import torch

from captioning.models.attention import (
    SoftAttention,
    attention_penalty,
    region_mean,
    zero_padding,
)

V, E, H, A, L, DG = 23, 8, 12, 9, 5, 6


def test_soft_attention_matches_formula():
    """e_ti = w^T tanh(W_a a_i + W_h h + b), alpha = softmax_i(e), z = sum_i alpha_i a_i."""
    torch.manual_seed(0)
    att = SoftAttention(DG, H, A)
    grid, h = torch.randn(2, L, DG), torch.randn(2, H)
    z, alpha = att(att.project(grid), grid, h)
    w_a, b, w_h, w = (
        att.grid_proj.weight,
        att.grid_proj.bias,
        att.hidden_proj.weight,
        att.score.weight,
    )
    for n in range(2):
        e = torch.stack([w[0] @ torch.tanh(w_a @ grid[n, i] + w_h @ h[n] + b) for i in range(L)])
        expected_alpha = torch.exp(e) / torch.exp(e).sum()
        torch.testing.assert_close(alpha[n], expected_alpha)
        torch.testing.assert_close(z[n], (expected_alpha[:, None] * grid[n]).sum(0))


@pytest.mark.parametrize("image", [None, [3, 3, 0, 1, 1, 2, 3]])
def test_blockwise_attention_equals_the_plain_pass(monkeypatch, image):
    """Without autograd the CPU attends a few rows at a time; same result as all rows at once."""
    import captioning.models.attention as attention

    torch.manual_seed(0)
    att = SoftAttention(DG, H, A)
    grid = torch.randn(4 if image else 7, L, DG)
    h = torch.randn(7, H, requires_grad=True)
    image = torch.tensor(image) if image else None
    plain = att(att.project(grid), grid, h, image)  # autograd on: the plain path
    monkeypatch.setattr(attention, "BLOCK_BYTES", 2 * L * A * 4)  # blocks of 2 rows
    calls = []
    blockwise = att._blockwise
    monkeypatch.setattr(att, "_blockwise", lambda *a: calls.append(1) or blockwise(*a))
    with torch.no_grad():
        blocks = att(att.project(grid), grid, h, image)
    assert calls == [1]
    for got, want in zip(blocks, plain, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("grad", [True, False])  # the plain pass, and the blockwise CPU pass
def test_masked_attention_gives_padding_zero_weight_and_the_unpadded_result(grad):
    """Padding (garbage, NaN included) gets weight exactly 0; a row's weights over its real
    regions and its context are those of the image without padding; one real region gets 1."""
    torch.manual_seed(0)
    att = SoftAttention(DG, H, A)
    counts = [3, 1, L]
    grid = torch.full((3, L, DG), float("nan"))
    mask = torch.arange(L) < torch.tensor(counts)[:, None]  # (3, L)
    grid[mask] = torch.randn(int(mask.sum()), DG)
    h = torch.randn(3, H, requires_grad=grad)
    clean = zero_padding(grid, mask)
    with torch.set_grad_enabled(grad):
        z, alpha = att(att.project(clean), clean, h, None, mask)
        assert (alpha[~mask] == 0).all() and alpha[1, 0].item() == 1.0
        for b, n in enumerate(counts):
            alone = grid[b : b + 1, :n]
            z1, alpha1 = att(att.project(alone), alone, h[b : b + 1])
            torch.testing.assert_close(alpha[b, :n], alpha1[0], atol=1e-6, rtol=0)
            torch.testing.assert_close(z[b], z1[0], atol=1e-6, rtol=0)


def test_masked_attention_with_rows_sharing_images():
    """Beam-style rows (several per image, reordered) read their image's mask."""
    torch.manual_seed(1)
    att = SoftAttention(DG, H, A)
    grid, mask = torch.randn(2, L, DG), torch.tensor([[True] * 2 + [False] * 3, [True] * L])
    image, h = torch.tensor([1, 1, 0, 0]), torch.randn(4, H)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            _, alpha = att(att.project(grid), grid, h, image, mask)
        assert (alpha[2:, 2:] == 0).all() and (alpha[:2] > 0).all()


def test_region_mean_leaves_padding_out():
    grid = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [1e9, 1e9]]])  # (1, 3, 2), one padded region
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(region_mean(grid, mask), torch.tensor([[2.0, 3.0]]))
    torch.testing.assert_close(region_mean(grid[:, :2], None), torch.tensor([[2.0, 3.0]]))


def test_penalty_counts_real_regions_only_and_its_target_only_shifts_it():
    """P = sum_{i real} (1 - sum_t alpha_ti)^2: a padded image's penalty is its unpadded one,
    and, since sum_i s_i = T, the paper's target 1 and the target T / K differ by a constant."""
    g = torch.Generator().manual_seed(0)
    alphas = torch.rand(1, 4, 3, generator=g).softmax(-1)  # (1, T=4, K=3)
    padded = torch.cat([alphas, torch.zeros(1, 4, 2)], dim=-1)  # (1, 4, 5)
    mask = torch.tensor([[True, True, True, False, False]])
    lengths = torch.tensor([4])
    unpadded = attention_penalty(alphas, lengths)
    torch.testing.assert_close(attention_penalty(padded, lengths, mask), unpadded)
    torch.testing.assert_close(attention_penalty(padded, lengths), unpadded + 2)  # unmasked
    s = alphas.sum(1)  # (1, K)
    even = ((4 / 3 - s) ** 2).sum()  # target T / K
    torch.testing.assert_close(unpadded - even, torch.tensor(3 * 1 - 2 * 4 + 16 / 3))
