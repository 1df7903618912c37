"""Benchmark references: our decoders' functions, computed the way the tutorials run them.

Written for this project after how the most used PyTorch captioning tutorial runs its model
(sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning: ``DecoderWithAttention.forward`` in
``models.py``, ``caption_image_beam_search`` in ``caption.py``), with our decoders' weights, so
each reference computes exactly our function and the benchmarks check that it does:

* :func:`teacher_forced_loss`: captions sorted by length, longest first; at step t only the
  ``batch_size_t`` captions that have a word t are stepped by an ``nn.*Cell``, the output layer
  runs per step into a (B, T, V) predictions tensor, and the loss is taken over the packed (real)
  positions. The attention loop recomputes the grid projection ``W_a a_i`` of the running rows at
  every step and sums the context with an elementwise product, as the tutorial does.
* :func:`beam_search`: one image at a time, its k live hypotheses stepped as one k-row batch
  (the grid of the image expanded to k rows, re-gathered with the hypotheses at every step);
  ``topk`` over the flattened k x V scores; words and attention maps of the hypotheses gathered
  and concatenated at every step; finished hypotheses in Python lists. The search rules are
  ours (:func:`captioning.decoding.beam_search`), so both must find the same captions.
* :func:`greedy`: one image at a time, one row, until `<end>`.
* Up-Down (``UpDownDecoder``) is stepped the way its reference implementation runs it
  (ruotianluo's self-critical.pytorch, ``AttModel._prepare_feature`` / ``UpDownCore`` /
  ``Attention``): region and mean embeddings and ``p_att_feats`` computed once per image (expanded
  to the k hypotheses), and in teacher forcing every caption stepped at every step up to the
  longest one, the log-softmax per step into a (B, T, V) tensor, the masked mean of the
  log-likelihood (its ``_forward`` and ``LanguageModelCriterion``).
* :func:`per_word_image_loss`: our fused teacher-forced pass of an ``every_step`` decoder fed
  ``[x_t; v]`` at every word (``W_ih v`` per word), the "before" of the once-per-row image term.
* :class:`PerWordImageTerm`: an ``every_step`` ``RNNDecoder`` stepped as version 0.2 did, with
  ``[x_t; v]`` through the module at every step (``W_ih v`` recomputed per word and per
  hypothesis), the "before" of the once-per-image image term.
* :func:`per_hypothesis_beam_search`, :func:`padded_loss`: the references of version 0.1 (every
  hypothesis stepped on its own from Python lists; every caption stepped to the longest one),
  kept for one release so that the README can show old and new figures side by side.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from captioning.contracts import EncoderOutput

BOS, EOS, PAD = 1, 2, 0
CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def never_emitted(logprobs: Tensor) -> Tensor:
    """`<pad>` and `<start>` at -inf, as our decoding masks them (an untrained model could
    pick them; the benchmarks' random weights do)."""
    return logprobs.index_fill(1, torch.tensor([PAD, BOS], device=logprobs.device), -math.inf)


def cell_of(decoder: nn.Module) -> nn.Module:
    """The ``nn.*Cell`` of a decoder: the attention decoder's own, or one sharing the first
    layer's parameters of an ``RNNDecoder``'s ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``."""
    if hasattr(decoder, "att_lstm"):  # Up-Down: two cells, stepped by updown_core
        return decoder.att_lstm
    if decoder.has_attention:
        return decoder.cell
    rnn = decoder.rnn
    kwargs = {"nonlinearity": "tanh"} if decoder.cell == "rnn" else {}
    cell = CELLS[decoder.cell](rnn.input_size, rnn.hidden_size, **kwargs)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        setattr(cell, name, getattr(rnn, f"{name}_l0"))  # share the parameters
    return cell


class Stepper:
    """One decoder step the tutorial's way, on a few rows (tensors with rows on dim 0).

    ``start(features, rows)`` gives the per-row tensors before `<start>` (the image's, repeated
    `rows` times); ``__call__(tokens, s)`` returns log-probabilities (N, V), the new per-row
    tensors and the attention weights (N, L) or None.

    Args:
        decoder: an ``AttentionDecoder`` or an ``RNNDecoder`` with ``every_step`` injection.
    """

    def __init__(self, decoder: nn.Module) -> None:
        if not decoder.has_attention and decoder.image_injection != "every_step":
            raise ValueError("the reference feeds [E y; v] at every step (every_step injection)")
        self.dec, self.cell = decoder, cell_of(decoder)
        self.lstm = isinstance(self.cell, nn.LSTMCell)
        self.updown = hasattr(decoder, "att_lstm")

    def start(self, features: EncoderOutput, rows: int = 1) -> dict[str, Tensor]:
        """Per-row tensors before `<start>`: one row per image, or `rows` rows of one image
        (views of it, as the tutorial expands ``encoder_out`` for its k hypotheses)."""
        if self.updown:
            return updown_start(self.dec, features, rows)
        if not self.dec.has_attention:
            vector = features.vector.expand(rows, -1) if rows > 1 else features.vector
            h = vector.new_zeros(vector.size(0), self.cell.hidden_size)  # (N, H)
            return {"v": vector, "h": h, "c": h}
        grid, dec = features.grid, self.dec
        mean = grid.mean(dim=1)  # (M, D_g)
        h = torch.tanh(dec.init_h(mean))
        c = torch.tanh(dec.init_c(mean)) if self.lstm else h
        if rows > 1:
            grid, h, c = grid.expand(rows, -1, -1), h.expand(rows, -1), c.expand(rows, -1)
        return {"grid": grid, "h": h, "c": c}

    def recur(self, x: Tensor, s: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.lstm:
            h, c = self.cell(x, (s["h"], s["c"]))
            return {**s, "h": h, "c": c}
        return {**s, "h": self.cell(x, s["h"]), "c": s["c"]}

    def __call__(
        self, tokens: Tensor, s: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        dec, emb = self.dec, self.dec.embed(tokens)  # (N, E)
        if self.updown:
            h2, s, alpha = updown_core(dec, tokens, s)
            return never_emitted(dec.out(h2).log_softmax(dim=1)), s, alpha
        if not dec.has_attention:
            s = self.recur(torch.cat([emb, s["v"]], dim=1), s)  # W_ih v recomputed every step
            return never_emitted(dec.out(dec.drop(s["h"])).log_softmax(dim=1)), s, None
        z, alpha = attend(dec, s["grid"], s["h"])
        z = torch.sigmoid(dec.f_beta(s["h"])) * z  # (N, D_g): the gated context
        s = self.recur(torch.cat([emb, z], dim=1), s)
        logits = dec.out(dec.drop(emb + dec.out_h(s["h"]) + dec.out_z(z)))  # (N, V)
        return never_emitted(logits.log_softmax(dim=1)), s, alpha


class PerWordImageTerm(nn.Module):
    """An ``every_step`` ``RNNDecoder`` with the step contract computed the straightforward way:
    every step feeds ``[E y_{t-1}; v]`` of each row to the module, so the first layer computes
    ``W_xh x_t + W_ih v + b`` and ``W_ih v`` again at every word of every row (hypothesis).

    Args:
        decoder: the ``RNNDecoder`` (``image_injection="every_step"``) whose weights to use.
    """

    has_attention = False

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        if decoder.image_injection != "every_step":
            raise ValueError("the per-word image term needs every_step injection")
        self.dec, self.vocab_size = decoder, decoder.vocab_size

    def init_state(self, features: EncoderOutput) -> Any:
        """Zero state (num_layers, N, H) (and cell state for the LSTM)."""
        return self.dec._zeros(features.vector.size(0), features.vector)

    def reorder_state(self, state: Any, index: Tensor) -> Any:
        if isinstance(state, Tensor):
            return state.index_select(1, index)
        return tuple(s.index_select(1, index) for s in state)

    def step(
        self, tokens: Tensor, state: Any, features: EncoderOutput
    ) -> tuple[Tensor, Any, dict[str, Tensor]]:
        dec = self.dec
        x = torch.cat([dec.embed(tokens), features.vector], dim=1).unsqueeze(1)  # (N, 1, E + D_v)
        out, state = dec.rnn(x, state)  # (N, 1, H)
        return dec.out(dec.drop(out.squeeze(1))).log_softmax(dim=-1), state, {}


def attend(dec: nn.Module, grid: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """The tutorial's attention with our weights: the grid projected again for these rows."""
    att = dec.attention
    joint = att.grid_proj(grid) + att.hidden_proj(h).unsqueeze(1)  # (N, L, A) every step
    alpha = att.score(torch.tanh(joint)).squeeze(2).softmax(dim=1)  # (N, L)
    return (grid * alpha.unsqueeze(2)).sum(dim=1), alpha  # (N, D_g), (N, L)


def updown_start(dec: nn.Module, features: EncoderOutput, rows: int = 1) -> dict[str, Tensor]:
    """self-critical.pytorch's ``_prepare_feature`` with our weights (eval mode: no dropout):
    ``fc_embed`` of the mean region, ``att_embed`` of the regions, ``ctx2att`` once; zero
    states; `rows` > 1 expands one image to its hypotheses."""
    fc = torch.relu(dec.mean_embed(features.grid.mean(dim=1)))  # (M, H)
    att = torch.relu(dec.region_embed(features.grid))  # (M, L, H)
    p_att = dec.attention.grid_proj(att)  # (M, L, A)
    zeros = fc.new_zeros(fc.size(0), dec.att_lstm.hidden_size)  # (M, H)
    s = {"fc": fc, "att": att, "p_att": p_att, "h1": zeros, "c1": zeros, "h2": zeros}
    s["c2"] = zeros
    if rows > 1:
        s = {key: value.expand(rows, *value.shape[1:]) for key, value in s.items()}
    return s


def updown_core(
    dec: nn.Module, tokens: Tensor, s: dict[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """``UpDownCore.forward`` + ``Attention.forward`` with our weights: h2 (N, H), the new
    per-row tensors and the weights (N, L)."""
    x = torch.relu(dec.embed(tokens))  # (N, E)
    h1, c1 = dec.att_lstm(torch.cat([s["h2"], s["fc"], x], dim=1), (s["h1"], s["c1"]))
    att_h = dec.attention.hidden_proj(h1).unsqueeze(1)  # (N, 1, A)
    dot = dec.attention.score(torch.tanh(s["p_att"] + att_h)).squeeze(2)  # (N, L)
    weight = dot.softmax(dim=1)  # (N, L)
    v_hat = torch.bmm(weight.unsqueeze(1), s["att"]).squeeze(1)  # (N, H)
    h2, c2 = dec.lang_lstm(torch.cat([v_hat, h1], dim=1), (s["h2"], s["c2"]))
    return h2, {**s, "h1": h1, "c1": c1, "h2": h2, "c2": c2}, weight


def updown_loss(
    decoder: nn.Module, features: EncoderOutput, inputs: Tensor, lengths: Tensor, targets: Tensor
) -> Tensor:
    """self-critical.pytorch's ``_forward`` + ``LanguageModelCriterion``: every caption at every
    step up to the longest, log-probabilities per step, the masked mean log-likelihood."""
    s = updown_start(decoder, features)
    t_max = int(lengths.max())
    outputs = []
    for t in range(t_max):
        h2, s, _ = updown_core(decoder, inputs[:, t], s)
        outputs.append(decoder.out(h2).log_softmax(dim=1))  # (B, V)
    logprobs = torch.stack(outputs, dim=1)  # (B, T, V)
    mask = (torch.arange(t_max) < lengths.unsqueeze(1)).to(logprobs.dtype)  # (B, T)
    picked = logprobs.gather(2, targets[:, :t_max].unsqueeze(2)).squeeze(2)  # (B, T)
    return -(picked * mask).sum() / mask.sum()


# -- teacher forcing -------------------------------------------------------------------------


def teacher_forced_loss(
    decoder: nn.Module, features: EncoderOutput, inputs: Tensor, lengths: Tensor, targets: Tensor
) -> Tensor:
    """Mean cross-entropy over the real words (+ the attention penalty), the tutorial's way
    (Up-Down: its reference implementation's way, :func:`updown_loss`)."""
    if hasattr(decoder, "att_lstm"):
        return updown_loss(decoder, features, inputs, lengths, targets)
    lengths, order = lengths.sort(descending=True)
    inputs, targets, features = inputs[order], targets[order], features.select(order)
    decode = lengths.tolist()
    stepper, dec = Stepper(decoder), decoder
    s = stepper.start(features)
    emb = dec.embed(inputs)  # (B, T, E)
    predictions = emb.new_zeros(len(decode), decode[0], dec.out.out_features)  # (B, T, V)
    alphas = emb.new_zeros(len(decode), decode[0], features.grid.size(1))  # (B, T, L)
    for t in range(decode[0]):
        n = sum(length > t for length in decode)  # batch_size_t
        s = {key: value[:n] for key, value in s.items()}
        if dec.has_attention:
            z, alpha = attend(dec, s["grid"], s["h"])
            z = torch.sigmoid(dec.f_beta(s["h"])) * z  # (n, D_g): the gated context
            s = stepper.recur(torch.cat([emb[:n, t], z], dim=1), s)
            predictions[:n, t] = dec.out(dec.drop(emb[:n, t] + dec.out_h(s["h"]) + dec.out_z(z)))
            alphas[:n, t] = alpha
        else:
            s = stepper.recur(torch.cat([emb[:n, t], s["v"]], dim=1), s)
            predictions[:n, t] = dec.out(dec.drop(s["h"]))  # (n, V)
    scores = pack_padded_sequence(predictions, decode, batch_first=True).data  # (P, V)
    words = pack_padded_sequence(targets, decode, batch_first=True).data  # (P,)
    loss = F.cross_entropy(scores, words)
    return loss + dec.attention_penalty(alphas, lengths) if dec.has_attention else loss


def per_word_image_loss(
    decoder: nn.Module, features: EncoderOutput, inputs: Tensor, lengths: Tensor, targets: Tensor
) -> Tensor:
    """Mean cross-entropy of an ``every_step`` ``RNNDecoder``'s fused teacher-forced pass fed
    ``[x_t; v]`` at every word, so that ``W_ih v`` is computed once per word (the pass before the
    image term was folded into the kernel's input weight); same kernel and output layer as ours."""
    x = decoder._inputs(decoder.embed(inputs), features)  # (B, T, E + D_v)
    state = decoder._initial(features, inputs.size(0), features.vector)
    out, _ = decoder._run(x, lengths.cpu(), state, None, x.device.type != "cpu")
    if isinstance(out, PackedSequence):
        out = pad_packed_sequence(out, batch_first=True, total_length=inputs.size(1))[0]
    logits = decoder._real_logits(out, lengths.to(out.device))  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD)


def padded_loss(
    decoder: nn.Module, features: EncoderOutput, inputs: Tensor, lengths: Tensor, targets: Tensor
) -> Tensor:
    """Version 0.1's reference: every caption stepped to the longest, the output layer per step
    on every row, the attention grid projected again at every step (Up-Down, new since:
    :func:`updown_loss`, which already runs that way)."""
    if hasattr(decoder, "att_lstm"):
        return updown_loss(decoder, features, inputs, lengths, targets)
    stepper, dec = Stepper(decoder), decoder
    s, logits, alphas = stepper.start(features), [], []
    for t in range(inputs.size(1)):
        emb = dec.embed(inputs[:, t])  # (B, E)
        if dec.has_attention:
            z, alpha = attend(dec, s["grid"], s["h"])
            z = torch.sigmoid(dec.f_beta(s["h"])) * z  # (B, D_g): the gated context
            s = stepper.recur(torch.cat([emb, z], dim=1), s)
            logits.append(dec.out(dec.drop(emb + dec.out_h(s["h"]) + dec.out_z(z))))
            alphas.append(alpha)
        else:
            s = stepper.recur(torch.cat([emb, s["v"]], dim=1), s)
            logits.append(dec.out(dec.drop(s["h"])))  # (B, V)
    loss = F.cross_entropy(torch.stack(logits, 1).flatten(0, 1), targets.flatten(), ignore_index=0)
    if not dec.has_attention:
        return loss
    real = torch.arange(inputs.size(1)) < lengths.unsqueeze(1)  # (B, T)
    alpha = torch.stack(alphas, dim=1) * real.unsqueeze(-1)  # (B, T, L)
    return loss + dec.attention_penalty(alpha, lengths)


# -- decoding --------------------------------------------------------------------------------


def _bound(best: float, t: int, max_len: int, length_penalty: float) -> float:
    """The best score a running hypothesis with summed log-prob `best` can still end with."""
    return best / (max_len if length_penalty > 0 else t + 1) ** length_penalty


@torch.no_grad()
def beam_search(
    model: Any,
    features: EncoderOutput,
    *,
    beam_size: int,
    max_len: int,
    length_penalty: float = 0.0,
    n_best: int = 1,
) -> list[tuple[list[int], float]]:
    """Per-image beam search, k live hypotheses as one batch; the best (words, score) of each
    image. `model` is the benchmark's wrapped decoder (``model.inner``, ``model.at_step``)."""
    stepper, k, lp, results = Stepper(model.inner), beam_size, length_penalty, []
    for i in range(features.vector.size(0)):
        s = stepper.start(features.select(torch.tensor([i])), k)
        tokens = torch.full((k,), BOS)
        scores = torch.zeros(k)
        seqs, maps = torch.zeros(k, 0, dtype=torch.long), None  # (k, t), (k, t, L)
        done: list[tuple[float, list[int], Tensor | None]] = []
        for t in range(1, max_len + 1):
            model.at_step(t)
            logprobs, s, alpha = stepper(tokens, s)  # (k, V)
            v = logprobs.size(1)
            total = scores.unsqueeze(1) + logprobs  # (k, V)
            top, flat = (total[0] if t == 1 else total.view(-1)).topk(2 * k)  # (2k,)
            parent, word = flat // v, flat % v
            seqs = torch.cat([seqs[parent], word.unsqueeze(1)], dim=1)  # (2k, t)
            if alpha is not None:
                new = alpha[parent].unsqueeze(1)  # (2k, 1, L)
                maps = new if maps is None else torch.cat([maps[parent], new], dim=1)
            going = []
            for rank, (score, w) in enumerate(zip(top.tolist(), word.tolist(), strict=True)):
                if w == EOS:
                    if rank < k and score > -math.inf:
                        kept = maps[rank] if maps is not None else None  # (t, L)
                        done.append((score / t**lp, seqs[rank].tolist(), kept))
                elif len(going) < k:
                    going.append(rank)
            done = sorted(done, key=lambda d: d[0], reverse=True)[:k]
            best = float(top[going[0]])
            if len(done) >= n_best and done[n_best - 1][0] >= _bound(best, t, max_len, lp):
                break
            keep = torch.tensor(going)
            s = {key: value[parent[keep]] for key, value in s.items()}  # grid re-gathered too
            scores, tokens, seqs = top[keep], word[keep], seqs[keep]
            maps = maps[keep] if maps is not None else None
        else:  # max_len: running hypotheses compete
            ends = zip(scores.tolist(), seqs.tolist(), strict=True)
            done += [(x / max_len**lp, q, None) for x, q in ends]
            done = sorted(done, key=lambda d: d[0], reverse=True)
        results.append((done[0][1], done[0][0]))
    return results


@torch.no_grad()
def greedy(model: Any, features: EncoderOutput, *, max_len: int) -> list[tuple[list[int], float]]:
    """Per-image greedy decoding, one row until `<end>`; (words, summed log-prob) per image."""
    stepper, results = Stepper(model.inner), []
    for i in range(features.vector.size(0)):
        s = stepper.start(features.select(torch.tensor([i])), 1)
        token, words, score = torch.tensor([BOS]), [], 0.0
        for t in range(1, max_len + 1):
            model.at_step(t)
            logprobs, s, _ = stepper(token, s)  # (1, V)
            best, token = logprobs.max(dim=1)
            words.append(int(token))
            score += float(best)
            if words[-1] == EOS:
                break
        results.append((words, score))
    return results


@torch.no_grad()
def per_hypothesis_beam_search(
    decoder: nn.Module, features: EncoderOutput, *, beam_size: int, max_len: int
) -> list[tuple[list[int], float]]:
    """Version 0.1's reference: one image at a time, every hypothesis stepped on its own
    through the step contract, hypotheses in Python lists, stopping when beam_size finished
    hypotheses beat every running one."""
    results = []
    for i in range(features.vector.size(0)):
        feats = features.select(torch.tensor([i]))
        beams = [([], 0.0, decoder.init_state(feats))]  # (words, summed log-prob, state)
        finished: list[tuple[float, list[int]]] = []
        for _ in range(max_len):
            candidates = []
            for words, score, state in beams:
                token = torch.tensor([words[-1] if words else BOS])
                logprobs, new_state, _ = decoder.step(token, state, feats)
                top, ids = never_emitted(logprobs)[0].topk(2 * beam_size)
                for logprob, word in zip(top.tolist(), ids.tolist(), strict=True):
                    candidates.append((score + logprob, [*words, word], new_state))
            candidates.sort(key=lambda c: c[0], reverse=True)
            beams = []
            for rank, (score, words, state) in enumerate(candidates[: 2 * beam_size]):
                if words[-1] == EOS:
                    if rank < beam_size:
                        finished.append((score, words))
                elif len(beams) < beam_size:
                    beams.append((words, score, state))
            finished = sorted(finished, key=lambda f: f[0], reverse=True)[:beam_size]
            if len(finished) == beam_size and finished[-1][0] >= beams[0][1]:
                break
        else:  # max_len reached: unfinished hypotheses compete too
            finished += [(score, words) for words, score, _ in beams]
            finished = sorted(finished, key=lambda f: f[0], reverse=True)
        results.append((finished[0][1], finished[0][0]))
    return results
