"""The RNN decoder (captioning.models.decoder): equations, fused and plain passes, padding, and the
decoder as a plain language model (state carried over chunks).
"""

import itertools

import pytest
import torch
from helpers import caption_loss, fixed_captions, overfit
from references import PerWordImageTerm

from captioning.contracts import EncoderOutput
from captioning.decoding import beam_search, greedy, sample
from captioning.models.decoder import ImageTermState, RNNDecoder, reorder_state

V, E, H, D = 23, 8, 12, 10
COMBOS = list(
    itertools.product(["rnn", "lstm", "gru"], ["every_step", "init_state", "first_input"], [1, 2])
)


def features(b: int = 3, seed: int = 0) -> EncoderOutput:
    g = torch.Generator().manual_seed(seed)
    return EncoderOutput(torch.randn(b, D, generator=g), torch.randn(b, 4, 6, generator=g))


def batch(b: int = 3, t: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(4, V, (b, t), generator=g)
    inputs[:, 0] = 1
    lengths = torch.tensor([t, t - 2, 3][:b])
    for i, n in enumerate(lengths):
        inputs[i, n:] = 0
    return inputs, lengths


def make(cell, injection, layers=1, **kw) -> RNNDecoder:
    torch.manual_seed(0)
    return RNNDecoder(
        vocab_size=V,
        vector_dim=D,
        cell=cell,
        embed_dim=E,
        hidden_dim=H,
        num_layers=layers,
        image_injection=injection,
        **kw,
    ).eval()


@pytest.mark.parametrize(("cell", "injection", "layers"), COMBOS)
def test_step_equals_fused(cell, injection, layers):
    dec, feats = make(cell, injection, layers), features()
    inputs, lengths = batch()
    fused = dec(feats, inputs, lengths).log_softmax(-1)  # (B, T, V)
    state = dec.init_state(feats)
    for t in range(inputs.size(1)):
        logprobs, state, _ = dec.step(inputs[:, t], state, feats)
        for i, n in enumerate(lengths.tolist()):
            if t < n:  # padded positions of the fused pass are zero, not outputs
                torch.testing.assert_close(logprobs[i], fused[i, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("injection", ["every_step", "first_input"])
def test_output_layer_sees_real_positions_only(injection):
    """With padding, the output layer runs on the real positions only; padded logits are 0."""
    dec, feats = make("lstm", injection), features()
    inputs, lengths = batch()
    rows = []
    dec.out.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[:-1].numel()))
    logits = dec(feats, inputs, lengths)  # (B, T, V)
    assert rows == [int(lengths.sum())]
    padded = torch.arange(inputs.size(1)) >= lengths.unsqueeze(1)  # (B, T)
    assert (logits[padded] == 0).all() and (logits[~padded] != 0).any(-1).all()


def test_vanilla_rnn_matches_formula():
    """h_t = tanh(W_xh x_t + W_hh h_{t-1} + W_ih v + b), y_t = W_hy h_t + b_y."""
    dec, feats = make("rnn", "every_step"), features()
    inputs, lengths = batch()
    w_in, w_hh = dec.rnn.weight_ih_l0, dec.rnn.weight_hh_l0  # (H, E + D), (H, H)
    w_xh, w_ih = w_in[:, :E], w_in[:, E:]
    b = dec.rnn.bias_ih_l0 + dec.rnn.bias_hh_l0
    h = torch.zeros(inputs.size(0), H)
    fused = dec(feats, inputs, lengths)
    for t in range(inputs.size(1)):
        x = dec.embed.weight[inputs[:, t]]  # (B, E)
        h = torch.tanh(x @ w_xh.T + h @ w_hh.T + feats.vector @ w_ih.T + b)
        y = h @ dec.out.weight.T + dec.out.bias  # (B, V)
        for i, n in enumerate(lengths.tolist()):
            if t < n:
                torch.testing.assert_close(y[i], fused[i, t], atol=1e-6, rtol=1e-6)


def test_recurrent_parameter_ratio():
    counts = {}
    for cell in ("rnn", "lstm", "gru"):
        dec = make(cell, "every_step")
        counts[cell] = sum(p.numel() for n, p in dec.rnn.named_parameters())
    assert counts["lstm"] == 4 * counts["rnn"] and counts["gru"] == 3 * counts["rnn"]


@pytest.mark.parametrize(
    ("cell", "injection"), [("lstm", "every_step"), ("rnn", "init_state"), ("gru", "first_input")]
)
def test_overfits_a_small_batch_and_decodes_it(cell, injection):
    torch.manual_seed(0)
    dec = RNNDecoder(
        vocab_size=V,
        vector_dim=D,
        cell=cell,
        embed_dim=16,
        hidden_dim=32,
        image_injection=injection,
    )
    feats = features(4, seed=1)
    captions = fixed_captions(4, 5, V)  # <start> w1..w5 <end>
    lengths = torch.full((4,), 6)

    def loss():
        return caption_loss(dec(feats, captions[:, :-1], lengths), captions[:, 1:])

    assert overfit(loss, dec.parameters(), steps=300, lr=1e-2).item() < 0.02
    out = greedy(dec.eval(), feats, max_len=10)
    assert out.best[:, :6].tolist() == captions[:, 1:].tolist()


def test_bad_arguments():
    from captioning.errors import CaptioningError

    with pytest.raises(CaptioningError, match="unknown decoder cell"):
        make("transformer", "every_step")
    with pytest.raises(CaptioningError, match="image_injection"):
        make("lstm", "sideways")
    with pytest.raises(CaptioningError, match="tie_weights"):
        make("lstm", "every_step", tie_weights=True)


def test_weight_tying_and_language_model_mode():
    dec = RNNDecoder(
        vocab_size=V,
        vector_dim=0,
        embed_dim=H,
        hidden_dim=H,
        tie_weights=True,
        image_injection="none",
    )
    assert dec.out.weight is dec.embed.weight
    inputs, lengths = batch()
    logits = dec(None, inputs, lengths)
    assert logits.shape == (3, 7, V)
    out = greedy(dec.eval(), None, max_len=5, batch_size=2)
    assert out.sequences.shape[0] == 2


def _concat_forward(dec: RNNDecoder, feats: EncoderOutput, inputs, lengths):
    """every_step the plain way: [x_t; v] fed to nn.RNN/LSTM/GRU, W_ih v at every word."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    x = dec._inputs(dec.embed(inputs), feats)  # (B, T, E + D)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, state = dec.rnn(packed, dec._initial(feats, inputs.size(0), feats.vector))
    out = pad_packed_sequence(out, batch_first=True, total_length=inputs.size(1))[0]
    return dec.out(out), state


@pytest.mark.parametrize(("cell", "layers"), [("rnn", 1), ("lstm", 2), ("gru", 1)])
def test_image_term_once_per_row_equals_concatenated_input(cell, layers):
    """The fused every_step pass (W_ih v once per row) gives the logits, final state and
    gradients of feeding [x_t; v] at every word."""
    dec, inputs_lengths = make(cell, "every_step", layers), batch()
    inputs, lengths = inputs_lengths
    grads, folded = [], []
    fold = dec._fold_image
    dec._fold_image = lambda *args: folded.append(True) or fold(*args)
    for run in ("ours", "concat"):
        feats = features()
        feats.vector.requires_grad_(True)
        dec.zero_grad()
        if run == "ours":
            logits, state = dec(feats, inputs, lengths, return_state=True)
        else:
            logits, state = _concat_forward(dec, feats, inputs, lengths)
        mask = (torch.arange(inputs.size(1)) < lengths.unsqueeze(1)).unsqueeze(-1)
        (logits * mask).pow(2).sum().backward()
        outs = [logits * mask, *(state if isinstance(state, tuple) else (state,))]
        grads.append((outs, feats.vector.grad, dec.rnn.weight_ih_l0.grad, dec.embed.weight.grad))
    assert folded == [True]  # the once-per-row path ran, once
    for ours, ref in zip(*grads, strict=True):
        for a, b in zip(
            ours if isinstance(ours, list) else [ours],
            ref if isinstance(ref, list) else [ref],
            strict=True,
        ):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_many_rows_use_the_concatenated_input():
    """With at least as many rows as image dimensions the plain [x_t; v] input is used (the
    folded one would be wider); both give the same logits."""
    dec = make("lstm", "every_step")
    inputs = torch.randint(4, V, (D + 2, 5))
    lengths = torch.full((D + 2,), 5)
    feats = features(D + 2)
    torch.testing.assert_close(
        dec(feats, inputs, lengths), _concat_forward(dec, feats, inputs, lengths)[0]
    )


V_lm, E_lm, H_lm, D_lm = 17, 8, 12, 6


def make_lm(cell: str, injection: str = "none", layers: int = 1) -> RNNDecoder:
    torch.manual_seed(0)
    return RNNDecoder(
        vocab_size=V_lm,
        vector_dim=0 if injection == "none" else D_lm,
        cell=cell,
        embed_dim=E_lm,
        hidden_dim=H_lm,
        num_layers=layers,
        image_injection=injection,
    ).eval()


@pytest.mark.parametrize(
    ("cell", "injection", "layers"),
    [("rnn", "none", 1), ("lstm", "none", 2), ("gru", "every_step", 1), ("lstm", "first_input", 1)],
)
def test_chunks_with_carried_state_equal_one_pass(cell, injection, layers):
    dec = make_lm(cell, injection, layers)
    feats = (
        None if injection == "none" else EncoderOutput(torch.randn(2, D_lm), torch.randn(2, 3, 4))
    )
    text = torch.randint(0, V_lm, (2, 12), generator=torch.Generator().manual_seed(1))
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
    dec = make_lm(cell)
    text = torch.randint(4, V_lm, (3, 6), generator=torch.Generator().manual_seed(2))
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
    dec = make_lm("lstm")
    text = torch.randint(4, V_lm, (2, 5), generator=torch.Generator().manual_seed(3))
    full = dec(None, text, torch.tensor([5, 5]))
    padded = torch.cat([text, torch.zeros(2, 2, dtype=torch.long)], 1)  # (B, 7), packed path
    torch.testing.assert_close(dec(None, padded, torch.tensor([5, 5]))[:, :5], full)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_detached_state_stops_gradients_at_the_chunk_boundary(cell):
    """Truncated BPTT: the second chunk's loss, run from the first chunk's state detached, gives
    no gradient to the embeddings of words seen only in the first chunk (their only path to it
    is through the state), while full backpropagation through the same state does."""
    dec = make_lm(cell)
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


# -- the image term once per image in step-wise decoding ------------------------------------


@pytest.mark.parametrize(
    ("cell", "layers"), [(c, n) for c in ("rnn", "lstm", "gru") for n in (1, 2)]
)
def test_steps_with_the_image_term_once_equal_the_per_word_formula(cell, layers):
    """Steps from init_state (W_ih v + b_ih kept in the state) give the log-probabilities,
    states and gradients of feeding [x_t; v] through the module at every step, to 1e-6."""
    dec, (inputs, _) = make(cell, "every_step", layers), batch()
    per_word = PerWordImageTerm(dec)
    runs = []
    for stepper in (dec, per_word):
        feats = features()
        feats.vector.requires_grad_(True)
        dec.zero_grad()
        state, outs = stepper.init_state(feats), []
        for t in range(inputs.size(1)):
            logprobs, state, _ = stepper.step(inputs[:, t], state, feats)
            outs.append(logprobs)
        recurrent = state.recurrent if isinstance(state, ImageTermState) else state
        torch.stack(outs).pow(2).sum().backward()
        runs.append((torch.stack(outs), recurrent, feats.vector.grad, dec.rnn.weight_ih_l0.grad))
    (ours, our_state, *our_grads), (ref, ref_state, *ref_grads) = runs
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(our_state, ref_state, atol=1e-6, rtol=1e-6)
    for a, b in zip(our_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _count_image_terms(dec: RNNDecoder) -> list[int]:
    """Rows of every image-term computation of `dec` (patched on the instance)."""
    rows, term = [], dec._image_term
    dec._image_term = lambda vector: rows.append(vector.size(0)) or term(vector)
    return rows


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_decoding_computes_the_image_term_once_per_image(cell):
    """Greedy, sampling (3 samples per image) and beam search (beam 4) compute W_ih v once for
    the B images, and find the captions and scores of the per-word formula."""
    dec, feats = make(cell, "every_step", 2), features(b=3)
    rows = _count_image_terms(dec)
    per_word = PerWordImageTerm(dec)
    for run in (
        lambda m: greedy(m, feats, max_len=6),
        lambda m: sample(m, feats, max_len=6, num_samples=3, generator=torch.Generator()),
        lambda m: beam_search(m, feats, beam_size=4, max_len=6, n_best=2),
    ):
        rows.clear()
        ours, ref = run(dec), run(per_word)
        assert rows == [3]
        assert torch.equal(ours.sequences, ref.sequences)
        torch.testing.assert_close(ours.scores, ref.scores, atol=1e-5, rtol=1e-6)


def test_beam_hypotheses_share_their_images_term():
    """After beam search's reorder the K hypotheses of an image carry that image's term."""
    dec, feats = make("lstm", "every_step"), features(b=2)
    state = dec.init_state(feats)
    rows = torch.tensor([0, 0, 0, 1, 1, 1])
    expanded = dec.reorder_state(state, rows)
    assert isinstance(expanded, ImageTermState)
    assert torch.equal(expanded.image, state.image[:, rows])
    e = dec.embed.embedding_dim
    w_ih = dec.rnn.weight_ih_l0[:, e:]
    direct = feats.vector @ w_ih.T + dec.rnn.bias_ih_l0  # (B, G)
    torch.testing.assert_close(expanded.image[0], direct[rows])


def test_step_accepts_a_bare_recurrent_state():
    """A state without the image term (e.g. from forward(return_state=True)) still steps: the
    term is then computed from the features."""
    dec, feats = make("gru", "every_step"), features()
    tokens = torch.tensor([1, 5, 7])
    full, _, _ = dec.step(tokens, dec.init_state(feats), feats)
    bare, state, _ = dec.step(tokens, torch.zeros(1, 3, H), feats)
    torch.testing.assert_close(full, bare, atol=0, rtol=0)
    assert isinstance(state, ImageTermState)


def test_checkpoint_keys_and_shapes_are_those_of_the_module():
    """The image term lives in the state, not in new parameters: an every_step decoder's state
    dict is nn.LSTM's, with W_xh and W_ih side by side in weight_ih_l0 (old checkpoints load)."""
    dec = make("lstm", "every_step", 2)
    shapes = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    layer = {"weight_hh": (4 * H, H), "bias_ih": (4 * H,), "bias_hh": (4 * H,)}
    want = {"embed.weight": (V, E), "out.weight": (V, H), "out.bias": (V,)}
    want |= {"rnn.weight_ih_l0": (4 * H, E + D), "rnn.weight_ih_l1": (4 * H, H)}
    want |= {f"rnn.{name}_l{i}": shape for name, shape in layer.items() for i in (0, 1)}
    assert shapes == want
