"""Soft attention (captioning.models.attention): the formula, blockwise CPU pass."""

import pytest
import torch

from captioning.models.attention import SoftAttention

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
