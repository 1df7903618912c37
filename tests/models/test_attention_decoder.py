"""Soft attention and the Show-Attend-Tell decoder: equations, step/teacher-forcing agreement,
the doubly stochastic regulariser, overfitting a batch, and the training loop's step."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT, caption_loss, fixed_captions, overfit, tiny_model_config

from captioning.contracts import EncoderOutput
from captioning.decoding import greedy
from captioning.errors import CaptioningError
from captioning.models.attention_decoder import AttentionDecoder

V, E, H, A, L, DG = 23, 8, 12, 9, 5, 6
CELLS = ["rnn", "lstm", "gru"]


def features(b: int = 3, seed: int = 0, regions: int = L) -> EncoderOutput:
    g = torch.Generator().manual_seed(seed)
    return EncoderOutput(torch.randn(b, 4, generator=g), torch.randn(b, regions, DG, generator=g))


def batch(b: int = 3, t: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(4, V, (b, t), generator=g)
    inputs[:, 0] = 1
    lengths = torch.tensor([t, t - 2, 3][:b])
    for i, n in enumerate(lengths):
        inputs[i, n:] = 0
    return inputs, lengths


def make(cell: str = "lstm", **kw) -> AttentionDecoder:
    torch.manual_seed(0)
    kw = {"embed_dim": E, "hidden_dim": H, "attention_dim": A, "dropout": 0.0, **kw}
    return AttentionDecoder(vocab_size=V, vector_dim=4, grid_dim=DG, cell=cell, **kw).eval()


@pytest.mark.parametrize("cell", CELLS)
def test_step_equals_teacher_forcing(cell):
    dec, feats = make(cell), features()
    inputs, lengths = batch()
    logits, alphas = dec(feats, inputs, lengths, return_alphas=True)  # (B, T, V), (B, T, L)
    logprobs_tf = logits.log_softmax(-1)
    state = dec.init_state(feats)
    for t in range(inputs.size(1)):
        logprobs, state, extras = dec.step(inputs[:, t], state, feats)
        assert extras["alpha"].shape == (3, L)
        for i, n in enumerate(lengths.tolist()):
            if t < n:
                torch.testing.assert_close(logprobs[i], logprobs_tf[i, t], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(extras["alpha"][i], alphas[i, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_alphas_are_distributions_and_padding_is_zero(cell):
    dec, feats = make(cell), features()
    inputs, lengths = batch()
    _, alphas = dec(feats, inputs, lengths, return_alphas=True)
    real = torch.arange(inputs.size(1)) < lengths[:, None]  # (B, T)
    assert (alphas >= 0).all()
    torch.testing.assert_close(alphas.sum(-1)[real], torch.ones(int(real.sum())))
    assert (alphas[~real] == 0).all()


def padded_forward(dec, feats, inputs, lengths):
    """The teacher-forced pass as it was before padded positions were skipped: every row runs
    to the longest caption and the output layers see every position (the reference below)."""
    t_max = inputs.size(1)
    embedded = dec.embed(inputs)  # (B, T, E)
    state = dec.init_state(feats)
    hiddens, contexts, alphas = [], [], []
    for t in range(max(int(lengths.max()), 1)):
        state, context, alpha = dec._advance(embedded[:, t], state)
        hiddens.append(state.h)
        contexts.append(context)
        alphas.append(alpha)

    def pad(x):
        return F.pad(x, (0, 0, 0, t_max - x.size(1)))  # (B, T, D)

    hidden, context = pad(torch.stack(hiddens, 1)), pad(torch.stack(contexts, 1))
    logits = dec._logits(embedded, hidden, context)  # (B, T, V)
    real = torch.arange(t_max) < lengths.unsqueeze(1)  # (B, T)
    return logits, pad(torch.stack(alphas, 1)) * real.unsqueeze(-1)


def count_rows(rows, module, args, out):
    rows.append(len(args[0]))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", [[3, 7, 5, 1, 5], [6, 6, 6, 6, 6], [2, 4, 4, 1, 3]])
def test_skipping_padding_keeps_loss_and_gradients(cell, lengths):
    """Loss (cross-entropy over real words + attention penalty), its gradients (every parameter
    and the grid) and the real logits/alphas equal the padded pass's, to 1e-6 relative (float64,
    dropout 0.5 in eval mode); padded positions get zero alphas; the cell only sees real rows."""
    dec = make(cell, dropout=0.5).double()
    g = torch.Generator().manual_seed(1)
    b, t = len(lengths), 7
    lengths = torch.tensor(lengths)
    inputs = torch.randint(4, V, (b, t), generator=g)
    inputs[:, 0] = 1
    real = torch.arange(t) < lengths.unsqueeze(1)  # (B, T)
    inputs[~real] = 0
    targets = torch.randint(4, V, (b, t), generator=g).masked_fill(~real, 0)
    grid = torch.randn(b, L, DG, generator=g, dtype=torch.float64)
    results = []
    for run in (partial(padded_forward, dec), partial(dec, return_alphas=True)):
        dec.zero_grad()
        feats = EncoderOutput(torch.zeros(b, 4), grid.clone().requires_grad_(True))
        rows: list[int] = []
        hook = dec.cell.register_forward_hook(partial(count_rows, rows))
        logits, alphas = run(feats, inputs, lengths)
        hook.remove()
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=0)
        loss = loss + dec.attention_penalty(alphas, lengths)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in dec.named_parameters() if p.grad is not None}
        results.append((loss, logits[real], alphas, grads, feats.grid.grad, sum(rows)))
    (loss0, logits0, alphas0, grads0, grid0, _), (loss1, logits1, alphas1, grads1, grid1, n) = (
        results
    )
    close = dict(rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(loss1, loss0, **close)
    torch.testing.assert_close(logits1, logits0, **close)
    torch.testing.assert_close(alphas1, alphas0, **close)
    assert (alphas1[~real] == 0).all()
    assert grads1.keys() == grads0.keys() and len(grads0) > 5
    for name, grad in grads0.items():
        torch.testing.assert_close(grads1[name], grad, **close, msg=name)
    torch.testing.assert_close(grid1, grid0, **close)
    assert n == int(lengths.sum())  # one cell row per real word, none for padding


def test_cell_input_and_deep_output_use_the_gated_context():
    """h_1 = cell([E y_0; z], h_0) with z = beta sum_i alpha_i a_i, beta = sigmoid(f_beta(h_0)),
    h_0 = tanh(init_h(mean a)); the deep output layer (eq. 7) sees the same gated z."""
    dec, feats = make("gru"), features()
    tokens = torch.tensor([1, 5, 7])
    state = dec.init_state(feats)
    h0 = torch.tanh(dec.init_h(feats.grid.mean(1)))
    torch.testing.assert_close(state.h, h0)
    z, _ = dec.attention(dec.attention.project(feats.grid), feats.grid, h0)
    beta = torch.sigmoid(dec.f_beta(h0))
    h1 = dec.cell(torch.cat([dec.embed(tokens), beta * z], -1), h0)
    logprobs, state, _ = dec.step(tokens, state, feats)
    torch.testing.assert_close(state.h, h1)
    deep = dec.embed(tokens) + dec.out_h(h1) + dec.out_z(beta * z)  # eq. 7, z gated
    torch.testing.assert_close(logprobs, dec.out(deep).log_softmax(-1))


def test_penalty_is_zero_when_every_region_gets_total_attention_one():
    dec = make(alpha_c=1.0)
    b, t = 2, 4  # T == L == 4: exact in binary floating point
    perm = torch.stack([torch.eye(t), torch.eye(t)[torch.tensor([2, 0, 3, 1])]])  # (B, T, L)
    uniform = torch.full((b, t, t), 1.0 / t)
    lengths = torch.full((b,), t)
    assert dec.attention_penalty(perm, lengths).item() == 0.0
    assert dec.attention_penalty(uniform, lengths).item() == 0.0
    stuck = torch.zeros(b, t, t)
    stuck[..., 0] = 1.0  # all attention on region 0: sum_t alpha = (4, 0, 0, 0)
    assert dec.attention_penalty(stuck, lengths).item() == pytest.approx(2 * (9 + 1 + 1 + 1))


def test_penalty_formula_lambda_and_masking():
    """lambda * sum_b P_b (the paper: once per caption), or lambda * sum_b T_b P_b (per word);
    P_b = sum_i (1 - sum_{t < T_b} alpha_ti)^2."""
    g = torch.Generator().manual_seed(0)
    alphas = torch.rand(3, 6, L, generator=g).softmax(-1)
    lengths = torch.tensor([6, 4, 2])
    per_caption = torch.stack(
        [((1 - alphas[b, :n].sum(0)) ** 2).sum() for b, n in enumerate(lengths.tolist())]
    )  # (B,)
    paper = make(alpha_c=0.5)
    torch.testing.assert_close(paper.attention_penalty(alphas, lengths), 0.5 * per_caption.sum())
    garbage = alphas.clone()
    garbage[1, 4:] = 7.0  # past the row's length: ignored
    torch.testing.assert_close(paper.attention_penalty(garbage, lengths), 0.5 * per_caption.sum())
    per_word = make(alpha_c=0.5, alpha_c_per="word")
    expected = 0.5 * (per_caption * lengths).sum()
    torch.testing.assert_close(per_word.attention_penalty(alphas, lengths), expected)
    with pytest.raises(CaptioningError, match="alpha_c_per='sentence'"):
        make(alpha_c_per="sentence")


def test_grid_is_projected_once_per_forward_and_per_decode():
    dec, feats = make(), features()
    inputs, lengths = batch()
    calls = []
    dec.attention.grid_proj.register_forward_hook(lambda *_: calls.append(1))
    dec(feats, inputs, lengths)
    assert len(calls) == 1
    greedy(dec, feats, max_len=6)
    assert len(calls) == 2


def test_reorder_state_gathers_rows():
    """Reordering gathers h, c and the row-to-image index; the images' projected grid and grid
    stay where they are, and the next step equals one from the gathered images."""
    dec, feats = make(), features()
    index = torch.tensor([2, 2, 0])
    start = dec.init_state(feats)
    reordered = dec.reorder_state(dec.reorder_state(start, torch.tensor([1, 2, 0])), index)
    direct = dec.init_state(feats.select(torch.tensor([0, 0, 1])))  # rows 2, 2, 0 of [1, 2, 0]
    assert reordered.projected.data_ptr() == start.projected.data_ptr()
    assert reordered.grid.data_ptr() == start.grid.data_ptr()
    assert reordered.image.tolist() == [0, 0, 1]
    torch.testing.assert_close(reordered.h, direct.h)
    torch.testing.assert_close(reordered.c, direct.c)
    tokens = torch.tensor([5, 6, 7])
    feats_rows = feats.select(reordered.image)
    for grad in (False, True):  # the blockwise (no autograd) and the plain path
        with torch.set_grad_enabled(grad):
            got, got_state, got_extras = dec.step(tokens, reordered, feats_rows)
            want, want_state, want_extras = dec.step(tokens, direct, feats_rows)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got_extras["alpha"], want_extras["alpha"])
        torch.testing.assert_close(got_state.h, want_state.h)
    gru = make("gru")
    assert gru.reorder_state(gru.init_state(feats), index).c is None


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_overfits_a_small_batch_and_decodes_it_with_attention(cell):
    torch.manual_seed(0)
    dec = AttentionDecoder(
        vocab_size=V,
        grid_dim=DG,
        cell=cell,
        embed_dim=16,
        hidden_dim=32,
        attention_dim=16,
        dropout=0.0,
    )
    feats = features(4, seed=1)
    captions = fixed_captions(4, 5, V)  # <start> w1..w5 <end>
    lengths = torch.full((4,), 6)

    def loss():
        logits, alphas = dec(feats, captions[:, :-1], lengths, return_alphas=True)
        return caption_loss(logits, captions[:, 1:]) + dec.attention_penalty(alphas, lengths)

    overfit(loss, dec.parameters(), steps=200, lr=1e-2)
    logits = dec(feats, captions[:, :-1], lengths)
    assert caption_loss(logits, captions[:, 1:]).item() < 0.05
    out = greedy(dec.eval(), feats, max_len=10)
    assert out.best[:, :6].tolist() == captions[:, 1:].tolist()
    assert out.attention is not None and out.attention.shape == (4, 1, out.best.size(1), L)
    torch.testing.assert_close(out.best_attention[:, :6].sum(-1), torch.ones(4, 6))


def test_training_loop_trains_a_caption_model_with_attention():
    """The training loop's cross-entropy calls forward(..., return_alphas=True) and adds the
    penalty."""
    from captioning.data.loader import CaptionBatch
    from captioning.models.caption_model import build_model
    from captioning.training import TrainLoop

    torch.manual_seed(0)
    config = tiny_model_config(
        decoder="attention", image_size=32, vector_dim=16, cell="lstm", attention_dim=8
    )
    model = build_model(config, vocab_size=V)
    assert model.decoder.has_attention and model.decoder.attention.grid_proj.in_features == 16
    captions, lengths = batch(3, 6)
    captions = torch.cat([captions, torch.zeros(3, 1, dtype=torch.long)], 1)  # (B, T + 1)
    lengths = lengths + 1
    loader = [
        CaptionBatch(
            torch.randn(2, 3, 32, 32),
            captions,
            lengths,
            torch.tensor([7, 7, 8]),
            torch.tensor([0, 0, 1]),
        )
    ]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    stats = TrainLoop(model, opt, device=torch.device("cpu")).run_epoch(loader)
    assert stats.steps == 1 and torch.isfinite(torch.tensor(stats.loss))


def test_bad_arguments():
    with pytest.raises(CaptioningError, match="unknown decoder cell"):
        make("transformer")
    with pytest.raises(CaptioningError, match="grid"):
        AttentionDecoder(vocab_size=V, grid_dim=0)


def test_beam_search_of_one_equals_greedy_with_attention():
    from captioning.decoding import beam_search

    dec, feats = make(), features(4, seed=2)
    g = greedy(dec, feats, max_len=6)
    b = beam_search(dec, feats, beam_size=1, max_len=6)
    t = g.sequences.size(2)
    assert b.best[:, :t].tolist() == g.best.tolist()
    torch.testing.assert_close(b.best_attention[:, :t], g.best_attention)


def test_decoder_configs_and_experiment_presets_compose():

    from hydra import compose, initialize_config_dir

    from captioning.models.decoder import RNNDecoder
    from captioning.targets import instantiate

    conf = ROOT / "conf"
    expected = {
        "show_tell_vgg16": ("lstm", "first_input"),
        "neuraltalk_vgg16": ("rnn", "every_step"),
        "sat_vgg16": ("lstm", None),
    }
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for name in ("rnn", "gru", "attention"):
            cfg = compose(config_name="train", overrides=[f"decoder={name}"])
            dec = instantiate(cfg.decoder, vocab_size=V, vector_dim=16, grid_dim=8)
            assert dec.has_attention == (name == "attention")
        for name, (cell, injection) in expected.items():
            cfg = compose(config_name="train", overrides=[f"experiment={name}"])
            assert cfg.encoder._target_.endswith(".vgg16") and cfg.data.name == "coco_karpathy"
            assert cfg.decoder.embed_dim == cfg.decoder.hidden_dim == 512
            dec = instantiate(cfg.decoder, vocab_size=V, vector_dim=4096, grid_dim=512)
            if injection is None:
                assert isinstance(dec, AttentionDecoder) and dec.cell_type == cell
                assert (dec.alpha_c, dec.alpha_c_per) == (1.0, "caption")  # as in the paper
            else:
                assert isinstance(dec, RNNDecoder) and (dec.cell, dec.image_injection) == (
                    cell,
                    injection,
                )


def test_cross_entropy_adds_the_regulariser_once_per_caption():
    """The training loss of an attention model: the words' summed cross-entropy plus lambda
    times each caption's penalty (the paper's eq. 14 next to the summed log-likelihood)."""
    from captioning.models.caption_model import build_model
    from captioning.training.objectives import caption_cross_entropy

    torch.manual_seed(0)
    config = tiny_model_config(decoder="attention", attention_dim=8, dropout=0.0, alpha_c=2.0)
    model = build_model(config, vocab_size=V).eval()
    images = torch.randn(2, 3, 16, 16)
    captions = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 9, 9, 2, 0]])
    lengths, index = torch.tensor([5, 3, 4]), torch.tensor([0, 0, 1])
    total, words = caption_cross_entropy(model, images, captions, lengths, index)
    logits, alphas = model(images, captions[:, :-1], lengths - 1, index, return_alphas=True)
    targets = captions[:, 1:].flatten()
    nll = F.cross_entropy(logits.flatten(0, 1), targets, ignore_index=0, reduction="sum")
    mask = torch.arange(4) < (lengths - 1).unsqueeze(1)  # (B, T) real steps
    received = (alphas * mask.unsqueeze(-1)).sum(1)  # (B, L)
    penalty = ((1 - received) ** 2).sum(1)  # (B,) one per caption
    assert int(words) == 9
    torch.testing.assert_close(total, nll + 2.0 * penalty.sum())


@pytest.mark.parametrize("sample_prob", [0.0, 1e-9])  # the fused pass, and the stepwise one
def test_padded_images_train_as_they_do_unpadded(sample_prob):
    """Images with 3, 1 and 5 regions in one padded batch: teacher-forced logits and weights,
    and the training loss (cross-entropy + the regulariser over real regions), equal those of
    each image alone; padding gets weight exactly 0."""
    from helpers import padded_features

    from captioning.models.caption_model import CaptionModel
    from captioning.training.objectives import caption_cross_entropy

    torch.manual_seed(0)
    dec = AttentionDecoder(
        vocab_size=V, grid_dim=6, embed_dim=E, hidden_dim=H, attention_dim=A, dropout=0.0
    ).eval()
    feats, alone = padded_features([3, 1, 5], seed=3)
    captions = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 9, 9, 2, 0], [1, 4, 2, 0, 0]])
    lengths, index = torch.tensor([5, 3, 4, 3]), torch.tensor([0, 1, 2, 1])
    model = CaptionModel(torch.nn.Identity(), dec)
    options = {"sample_prob": sample_prob}
    total, _ = caption_cross_entropy(model, feats, captions, lengths, index, **options)
    expected = 0.0
    for b, one in enumerate(alone):
        rows = (index == b).nonzero().squeeze(1)
        n = int(lengths[rows].max())
        caps, lens = captions[rows, :n], lengths[rows]
        loss, _ = caption_cross_entropy(model, one, caps, lens, torch.zeros_like(rows), **options)
        expected = expected + loss
        inputs = caps[:, :-1]
        logits, alphas = dec(feats.select(index[rows]), inputs, lens - 1, return_alphas=True)
        lo, al = dec(one.select(torch.zeros_like(rows)), inputs, lens - 1, return_alphas=True)
        k = one.grid.size(1)
        torch.testing.assert_close(logits, lo, atol=1e-6, rtol=0)
        torch.testing.assert_close(alphas[..., :k], al, atol=1e-6, rtol=0)
        assert (alphas[..., k:] == 0).all()
    torch.testing.assert_close(total, expected, atol=0, rtol=1e-6)
