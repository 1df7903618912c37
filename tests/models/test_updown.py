"""The Up-Down decoder: one step against the paper's equations, teacher forcing against steps,
padded regions, the once-per-image projection, overfitting, configs and the training step."""

import pytest
import torch
from helpers import (
    ROOT,
    caption_loss,
    fixed_captions,
    overfit,
    padded_features,
    tiny_model_config,
)

from captioning.contracts import EncoderOutput
from captioning.decoding import beam_search, greedy
from captioning.errors import CaptioningError
from captioning.models.updown import UpDownDecoder

V, E, H, A, K, G = 23, 8, 12, 9, 5, 6


def make(**kw) -> UpDownDecoder:
    torch.manual_seed(0)
    kw = {"embed_dim": E, "hidden_dim": H, "attention_dim": A, "dropout": 0.0, **kw}
    return UpDownDecoder(vocab_size=V, grid_dim=G, **kw).eval()


def features(b: int = 3, seed: int = 0) -> EncoderOutput:
    g = torch.Generator().manual_seed(seed)
    return EncoderOutput(torch.randn(b, 4, generator=g), torch.randn(b, K, G, generator=g))


def lstm(x, h, c, cell):
    """nn.LSTMCell by hand: gates i, f, g, o."""
    gates = cell.weight_ih @ x + cell.bias_ih + cell.weight_hh @ h + cell.bias_hh
    i, f, g, o = gates.chunk(4)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


@pytest.mark.parametrize("embed_regions", [True, False])
def test_two_steps_match_the_paper_equations_by_hand(embed_regions):
    """h1 = LSTM_att([h2; v̄; ReLU(W_e y)]), a_i = w_a^T tanh(W_va v_i + b + W_ha h1),
    alpha = softmax(a) over real regions, v̂ = sum alpha v_i, h2 = LSTM_lang([v̂; h1]),
    p = softmax(W_p h2 + b_p); with embedded regions v_i = ReLU(W_emb v_i^raw + b) and
    v̄ = ReLU(W_fc mean_i v_i^raw + b). Two steps, so that h2_{t-1} != 0 is exercised."""
    dec = make(embed_regions=embed_regions)
    raw = torch.randn(1, K, G)
    mask = torch.tensor([[True, True, True, False, False]])
    feats = EncoderOutput(torch.randn(1, 4), raw, mask)
    state = dec.init_state(feats)
    words = [1, 7]
    v = raw[0, :3]  # (3, G) the real regions
    if embed_regions:
        v_bar = torch.relu(dec.mean_embed(v.mean(0)))
        v = torch.relu(dec.region_embed(v))
    else:
        v_bar = v.mean(0)
    h1 = c1 = h2 = c2 = torch.zeros(H)
    att = dec.attention
    for word in words:
        logprobs, state, extras = dec.step(torch.tensor([word]), state, feats)
        x = torch.relu(dec.embed.weight[word])
        h1, c1 = lstm(torch.cat([h2, v_bar, x]), h1, c1, dec.att_lstm)
        a = torch.stack(
            [
                att.score.weight[0]
                @ torch.tanh(
                    att.grid_proj.weight @ v[i] + att.grid_proj.bias + att.hidden_proj.weight @ h1
                )
                for i in range(3)
            ]
        )
        alpha = torch.exp(a) / torch.exp(a).sum()
        v_hat = (alpha[:, None] * v).sum(0)
        h2, c2 = lstm(torch.cat([v_hat, h1]), h2, c2, dec.lang_lstm)
        p = torch.softmax(dec.out.weight @ h2 + dec.out.bias, dim=0)
        torch.testing.assert_close(extras["alpha"][0], torch.cat([alpha, torch.zeros(2)]))
        torch.testing.assert_close(logprobs[0], p.log(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state.h1[0], h1)
        torch.testing.assert_close(state.h2[0], h2)


def test_teacher_forcing_equals_steps_with_padded_regions():
    dec = make()
    feats, _ = padded_features([3, 1, 5], seed=2)
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(4, V, (3, 6), generator=g)
    inputs[:, 0] = 1
    lengths = torch.tensor([4, 6, 2])
    logits, alphas = dec(feats, inputs, lengths, return_alphas=True)  # (B, T, V), (B, T, K)
    state = dec.init_state(feats)
    for t in range(6):
        logprobs, state, extras = dec.step(inputs[:, t], state, feats)
        for i, n in enumerate(lengths.tolist()):
            if t < n:
                torch.testing.assert_close(logprobs[i], logits[i, t].log_softmax(-1))
                torch.testing.assert_close(extras["alpha"][i], alphas[i, t])
            else:
                assert (logits[i, t] == 0).all() and (alphas[i, t] == 0).all()
    assert (alphas[~feats.mask.unsqueeze(1).expand_as(alphas)] == 0).all()


def test_a_padded_image_gives_its_unpadded_outputs():
    """Teacher forcing (logits and weights) of images with 3, 1 and 5 regions in one padded
    batch equal those of each image alone, to 1e-6; the padding (1e4s) never leaks in."""
    dec = make()
    feats, alone = padded_features([3, 1, 5], seed=3)
    inputs = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 0, 0], [1, 11, 12, 13, 0]])
    lengths = torch.tensor([5, 3, 4])
    logits, alphas = dec(feats, inputs, lengths, return_alphas=True)
    for b, one in enumerate(alone):
        n, k = int(lengths[b]), one.grid.size(1)
        lo, al = dec(one, inputs[b : b + 1, :n], lengths[b : b + 1], return_alphas=True)
        torch.testing.assert_close(logits[b, :n], lo[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(alphas[b, :n, :k], al[0], atol=1e-6, rtol=0)
        assert (alphas[b, :, k:] == 0).all()


def test_regions_are_projected_once_per_image_and_beams_share_them():
    dec = make()
    feats = features(4, seed=1)
    calls = []
    dec.attention.grid_proj.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape))
    beam_search(dec, feats, beam_size=3, max_len=6)
    assert calls == [torch.Size([4, K, H])]  # once, for the 4 images, not per beam or step
    state = dec.init_state(feats)
    moved = dec.reorder_state(state, torch.tensor([2, 2, 0]))
    assert moved.projected.data_ptr() == state.projected.data_ptr()
    assert moved.regions.data_ptr() == state.regions.data_ptr()
    assert moved.image.tolist() == [2, 2, 0]
    direct = dec.init_state(feats.select(torch.tensor([2, 2, 0])))
    tokens = torch.tensor([5, 6, 7])
    for grad in (False, True):  # the blockwise (no autograd) and the plain attention
        with torch.set_grad_enabled(grad):
            got, _, got_extras = dec.step(tokens, moved, None)
            want, _, want_extras = dec.step(tokens, direct, None)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got_extras["alpha"], want_extras["alpha"])


def test_overfits_a_small_batch_and_decodes_it():
    torch.manual_seed(0)
    dec = UpDownDecoder(
        vocab_size=V, grid_dim=G, embed_dim=16, hidden_dim=32, attention_dim=16, dropout=0.0
    )
    feats, _ = padded_features([3, 1, 4, 2], seed=1)
    captions = fixed_captions(4, 5, V)  # <start> w1..w5 <end>
    lengths = torch.full((4,), 6)
    overfit(
        lambda: caption_loss(dec(feats, captions[:, :-1], lengths), captions[:, 1:]),
        dec.parameters(),
        steps=150,
        lr=1e-2,
    )
    assert caption_loss(dec(feats, captions[:, :-1], lengths), captions[:, 1:]).item() < 0.05
    out = greedy(dec.eval(), feats, max_len=10)
    assert out.best[:, :6].tolist() == captions[:, 1:].tolist()
    torch.testing.assert_close(out.best_attention[:, :6].sum(-1), torch.ones(4, 6))
    assert (out.best_attention[1, :, 1:] == 0).all()  # one real region


def test_builds_on_a_grid_encoder_and_trains_a_step_with_sizes_from_the_encoder():
    """decoder=updown on vgg_tiny's grid (K = L cells): the region size comes from the encoder,
    and the cross-entropy of the training loop runs (regulariser off, as in the paper)."""
    from captioning.models.caption_model import build_model
    from captioning.training.objectives import caption_cross_entropy

    torch.manual_seed(0)
    config = tiny_model_config(decoder="updown", vector_dim=16, attention_dim=8, dropout=0.0)
    model = build_model(config, vocab_size=V)
    assert model.decoder.region_embed.in_features == model.encoder.grid_dim
    captions = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 9, 9, 2, 0]])
    lengths, index = torch.tensor([5, 3, 4]), torch.tensor([0, 0, 1])
    loss, words = caption_cross_entropy(model, torch.randn(2, 3, 16, 16), captions, lengths, index)
    loss.backward()
    assert int(words) == 9 and torch.isfinite(loss)
    assert model.decoder.att_lstm.weight_ih.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(CaptioningError, match="grid_dim"):
        UpDownDecoder(vocab_size=V, grid_dim=0)
    with pytest.raises(CaptioningError, match="alpha_c_per"):
        make(alpha_c_per="sentence")


def test_config_and_presets_compose():
    """decoder=updown; experiment=updown has the paper's sizes and the reference's optimiser;
    updown_scst starts from it with a self-critical objective."""
    from hydra import compose, initialize_config_dir

    from captioning.targets import instantiate

    conf = ROOT / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["decoder=updown"])
        dec = instantiate(cfg.decoder, vocab_size=V, vector_dim=16, grid_dim=8)
        assert isinstance(dec, UpDownDecoder) and dec.has_attention
        if not (conf / "encoder" / "precomputed.yaml").exists():
            pytest.skip("the presets use encoder=precomputed (issue 22's data side)")
        xe = compose(config_name="train", overrides=["experiment=updown"])
        sizes = (xe.decoder.embed_dim, xe.decoder.hidden_dim, xe.decoder.attention_dim)
        assert sizes == (1000, 1000, 512) and xe.decoder.dropout == 0.5
        assert (xe.optim.name, xe.optim.lr, xe.optim.schedule) == ("adam", 5e-4, "step")
        assert (xe.optim.step_size, xe.optim.gamma, xe.trainer.batch_size) == (3, 0.8, 10)
        assert xe.objective.scheduled_sampling.start_epoch == 6
        sc = compose(config_name="train", overrides=["experiment=updown_scst"])
        assert sc.objective._target_.endswith("SelfCriticalObjective")
        assert (sc.optim.lr, sc.optim.schedule) == (5e-5, "none")
        assert sc.decoder.hidden_dim == 1000 and sc.trainer.init_from == "outputs/updown"
