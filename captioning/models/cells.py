"""One step of an ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` stack, with its own weights, whose first
layer adds a per-row input term computed beforehand.

:class:`~captioning.models.decoder.RNNDecoder` with ``every_step`` injection feeds ``[x_t; v]`` to
its first layer, whose input weight is ``[W_xh | W_ih]``. ``W_ih v`` is the same at every step of
a caption, so decoding computes it once per image (with the bias ``b_ih``) and hands it to
:func:`stacked_step`, which multiplies only the word ``x_t`` by ``W_xh``: the same pre-activation
``W_xh x_t + W_ih v + b_ih + W_hh h + b_hh`` as the module, and the module's gate equations
(PyTorch's documented ones: LSTM gates in the order i, f, g, o; GRU r, z, n with ``r`` applied
to ``W_hn h + b_hn``). Dropout between layers is the module's (``rnn.dropout`` in train mode).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["stacked_step"]


def stacked_step(
    rnn: nn.RNNBase, cell: str, x: Tensor, image_term: Tensor, state: Any
) -> tuple[Tensor, Any]:
    """One step of every layer of `rnn`.

    Args:
        rnn: the ``nn.RNN`` (tanh) / ``nn.LSTM`` / ``nn.GRU`` whose weights to use.
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        x: (N, E) the word part of the first layer's input (the first E columns of its weight).
        image_term: (N, G) added to the first layer's input pre-activation (``W_ih v + b_ih``);
            G = gates x H.
        state: (layers, N, H), or ``(h, c)`` for the LSTM.

    Returns:
        The last layer's output (N, H) and the new state (same layout as `state`).
    """
    lstm = cell == "lstm"
    hs, cs = state if lstm else (state, None)
    new_h, new_c, inp = [], [], x
    for layer in range(rnn.num_layers):
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
        b_hh = getattr(rnn, f"bias_hh_l{layer}", None)
        if layer == 0:
            gi = torch.addmm(image_term, inp, w_ih[:, : inp.size(1)].t())  # (N, G)
        else:
            inp = F.dropout(inp, rnn.dropout, rnn.training)
            gi = F.linear(inp, w_ih, getattr(rnn, f"bias_ih_l{layer}", None))  # (N, G)
        h = hs[layer]  # (N, H)
        gh = F.linear(h, w_hh, b_hh)  # (N, G)
        if cell == "rnn":
            h = torch.tanh(gi + gh)
        elif lstm:
            i, f, g, o = (gi + gh).chunk(4, dim=1)  # (N, H) each
            c = torch.sigmoid(f) * cs[layer] + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            new_c.append(c)
        else:  # gru
            i_r, i_z, i_n = gi.chunk(3, dim=1)
            h_r, h_z, h_n = gh.chunk(3, dim=1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h = n + z * (h - n)  # (1 - z) n + z h
        new_h.append(h)
        inp = h
    h_out = torch.stack(new_h)  # (layers, N, H)
    return inp, ((h_out, torch.stack(new_c)) if lstm else h_out)
