"""The decoder as a plain language model: running from a given state over chunks (truncated BPTT)."""

import pytest
import torch

from captioning.contracts import EncoderOutput
from captioning.models.decoder import RNNDecoder, reorder_state

V, E, H, D = 17, 8, 12, 6


def make(cell: str, injection: str = "none", layers: int = 1) -> RNNDecoder:
    torch.manual_seed(0)
    return RNNDecoder(
        vocab_size=V,
        vector_dim=0 if injection == "none" else D,
        cell=cell,
        embed_dim=E,
        hidden_dim=H,
        num_layers=layers,
        image_injection=injection,
    ).eval()


@pytest.mark.parametrize(
    ("cell", "injection", "layers"),
    [("rnn", "none", 1), ("lstm", "none", 2), ("gru", "every_step", 1), ("lstm", "first_input", 1)],
)
def test_chunks_with_carried_state_equal_one_pass(cell, injection, layers):
    dec = make(cell, injection, layers)
    feats = None if injection == "none" else EncoderOutput(torch.randn(2, D), torch.randn(2, 3, 4))
    text = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(1))
    full = torch.full((2,), 12)
    whole, final = dec(feats, text, full, return_state=True)  # (B, T, V)
    chunks, state = [], None
    for start in range(0, 12, 4):
        logits, state = dec(
            feats, text[:, start : start + 4], torch.full((2,), 4), state=state, return_state=True
        )
        chunks.append(logits)
    torch.testing.assert_close(torch.cat(chunks, dim=1), whole, atol=1e-5, rtol=1e-5)
    for got, want in zip(
        state if isinstance(state, tuple) else (state,),
        final if isinstance(final, tuple) else (final,),
        strict=True,
    ):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_returned_state_is_each_rows_last_real_step(cell):
    """With padding, the state returned is the one after each row's last real word."""
    dec = make(cell)
    text = torch.randint(4, V, (3, 6), generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([6, 2, 4])
    logits, state = dec(None, text, lengths, return_state=True)
    step_state = dec.init_state(None, batch_size=3)
    for i, n in enumerate(lengths.tolist()):
        s = reorder_state(step_state, torch.tensor([i]))
        for t in range(n):
            logprobs, s, _ = dec.step(text[i : i + 1, t], s, None)
            torch.testing.assert_close(logprobs[0], logits[i, t].log_softmax(-1))
        for got, want in zip(
            s if isinstance(s, tuple) else (s,),
            state if isinstance(state, tuple) else (state,),
            strict=True,
        ):
            torch.testing.assert_close(got[:, 0], want[:, i], atol=1e-6, rtol=1e-6)


def test_padded_and_unpadded_batches_agree():
    """Full-length batches skip packing; the real positions come out the same either way."""
    dec = make("lstm")
    text = torch.randint(4, V, (2, 5), generator=torch.Generator().manual_seed(3))
    full = dec(None, text, torch.tensor([5, 5]))
    padded = torch.cat([text, torch.zeros(2, 2, dtype=torch.long)], 1)  # (B, 7), packed path
    torch.testing.assert_close(dec(None, padded, torch.tensor([5, 5]))[:, :5], full)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_detached_state_stops_gradients_at_the_chunk_boundary(cell):
    """Truncated BPTT: the second chunk's loss, run from the first chunk's state detached, gives
    no gradient to the embeddings of words seen only in the first chunk (their only path to it
    is through the state), while full backpropagation through the same state does."""
    dec = make(cell)
    first = torch.tensor([[4, 5, 6, 4], [5, 6, 4, 5]])  # words 4..6 only here
    second = torch.tensor([[7, 8, 9, 10], [11, 12, 7, 8]])  # words 7..12 only here
    chunk = torch.full((2,), 4)

    def grads(detach: bool) -> torch.Tensor:
        dec.zero_grad()
        _, state = dec(None, first, chunk, return_state=True)
        if detach:
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        logits, _ = dec(None, second, chunk, state=state, return_state=True)
        logits.log_softmax(-1).mean().backward()
        return dec.embed.weight.grad.clone()  # (V, E)

    truncated, full = grads(detach=True), grads(detach=False)
    assert torch.count_nonzero(truncated[4:7]) == 0  # first-chunk words: nothing flows back
    assert torch.count_nonzero(full[4:7]) > 0  # ... unless the state carries the gradient
    torch.testing.assert_close(truncated[7:13], full[7:13], rtol=0, atol=0)  # second chunk alike
