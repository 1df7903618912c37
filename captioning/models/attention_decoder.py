"""Show, Attend and Tell decoder (Xu et al. 2015): a recurrent cell with soft attention.

At every step t, with the previous word ``y_{t-1}`` and state ``h_{t-1}``:

    c_t, alpha_t = attention(a, h_{t-1})                  sum_i alpha_ti a_i (captioning.models.attention)
    beta_t       = sigmoid(f_beta(h_{t-1}))               gating scalar (paper section 4.2.1)
    z_t          = beta_t c_t                             the context vector, gated
    h_t          = cell([E y_{t-1}; z_t], h_{t-1})        LSTM, GRU or tanh RNN cell
    p(y_t)       ∝ exp(L_o(E y_{t-1} + L_h h_t + L_z z_t))  deep output layer (eq. 7)

The gate is part of the context z_t itself (section 4.2.1: phi({a_i}, {alpha_i}) = beta sum_i
alpha_i a_i), so the deep output layer sees the gated context too. The initial state is
``h_0 = tanh(init_h(mean_i a_i))`` (and ``c_0 = tanh(init_c(...))`` for the LSTM), as in the
authors' code. Images with fewer real regions than L (``features.mask``, pre-extracted object
features) are attended over their real regions only: padding gets weight exactly 0, the mean is
over real regions, and the regulariser counts real regions only, so a padded image gets the
outputs it gets unpadded. Training adds the doubly stochastic regulariser
``lambda * sum_i (1 - sum_t alpha_ti)^2`` (eq. 14) to each caption's summed negative
log-likelihood, as the paper does (``alpha_c_per="caption"``), see
:meth:`AttentionDecoder.attention_penalty`.

Attention makes every step depend on the previous hidden state, so both the teacher-forced pass and
decoding run one cell step per word (a Python loop over time). What does not depend on t is done
once: the grid projection ``W_a a_i`` (per image), the word embeddings, and the output layers (one
matmul over all steps after the loop). Padding costs nothing: the teacher-forced pass sorts the
captions by length and steps only the ones that have a word t, and the output layers see only
real positions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from captioning.contracts import EncoderOutput
from captioning.errors import CaptioningError
from captioning.models.attention import (
    SoftAttention,
    attention_penalty,
    region_mean,
    zero_padding,
)
from captioning.models.stepping import LengthSchedule, cat_steps, step_log_softmax

__all__ = ["AttentionDecoder", "AttentionState"]

CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def _first_rows(state: AttentionState, n: int) -> AttentionState:
    """The first `n` rows of a state whose row i is image i (views, no copies)."""
    if state.h.size(0) == n:
        return state
    c = state.c[:n] if state.c is not None else None
    mask = state.mask[:n] if state.mask is not None else None
    return AttentionState(state.h[:n], c, state.projected[:n], state.grid[:n], state.image, mask)


class AttentionState(NamedTuple):
    """Recurrent state of :class:`AttentionDecoder`: per-row tensors have the rows on dim 0.

    Attributes:
        h: (N, H) hidden state of each row.
        c: (N, H) LSTM memory cell, or None for the RNN and GRU cells.
        projected: (M, L, A) the grid projection ``W_a a_i + b``, computed once per image.
        grid: (M, L, D_g) the region features of the same images.
        image: (N,) the image of each row, or None while row n is image n. Reordering rows (beam
            search) gathers this index, never the images' tensors.
        mask: (M, L) bool, ``True`` for real regions, or None when every region is real.
    """

    h: Tensor
    c: Tensor | None
    projected: Tensor
    grid: Tensor
    image: Tensor | None = None
    mask: Tensor | None = None


class AttentionDecoder(nn.Module):
    """Word decoder with soft attention over the encoder grid (the step contract, :class:`captioning.contracts.CaptionDecoder`).

    Args:
        vocab_size: output vocabulary size V.
        vector_dim: accepted for a uniform builder signature; unused (the grid is attended).
        grid_dim: size D_g of each region feature.
        cell: ``"lstm"`` (the paper), ``"gru"`` or ``"rnn"`` (tanh).
        embed_dim: word embedding size E (also the deep output layer's width).
        hidden_dim: hidden size H.
        attention_dim: size A of the attention MLP.
        dropout: dropout on the deep output layer's input to ``L_o`` (training only).
        alpha_c: weight lambda of the doubly stochastic attention regulariser.
        alpha_c_per: ``"caption"`` (the paper: lambda times each caption's penalty, added to
            its summed negative log-likelihood) or ``"word"`` (added to every word's loss).
        pad_id: id of ``<pad>`` (its embedding is kept at zero).
    """

    has_attention = True

    def __init__(
        self,
        *,
        vocab_size: int,
        vector_dim: int | None = None,
        grid_dim: int,
        cell: str = "lstm",
        embed_dim: int = 512,
        hidden_dim: int = 512,
        attention_dim: int = 512,
        dropout: float = 0.5,
        alpha_c: float = 1.0,
        alpha_c_per: str = "caption",
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise CaptioningError(f"unknown decoder cell {cell!r}; choose one of {sorted(CELLS)}")
        if not grid_dim or grid_dim < 1:
            raise CaptioningError(
                f"the attention decoder needs an encoder grid (grid_dim >= 1), got {grid_dim}"
            )
        if alpha_c_per not in ("caption", "word"):
            raise CaptioningError(
                f"alpha_c_per={alpha_c_per!r}: use 'caption' (the paper) or 'word'"
            )
        self.vocab_size, self.cell_type, self.alpha_c = vocab_size, cell, float(alpha_c)
        self.alpha_c_per = alpha_c_per
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.attention = SoftAttention(grid_dim, hidden_dim, attention_dim)
        self.init_h = nn.Linear(grid_dim, hidden_dim)
        self.init_c = nn.Linear(grid_dim, hidden_dim) if cell == "lstm" else None
        self.f_beta = nn.Linear(hidden_dim, 1)
        self.cell = CELLS[cell](embed_dim + grid_dim, hidden_dim)
        self.out_h = nn.Linear(hidden_dim, embed_dim, bias=False)  # L_h
        self.out_z = nn.Linear(grid_dim, embed_dim, bias=False)  # L_z
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(embed_dim, vocab_size)  # L_o

    # -- state ---------------------------------------------------------------------------------

    def init_state(self, features: EncoderOutput) -> AttentionState:
        """The state before `<start>` is fed, with the grid projected once.

        Args:
            features: the encoder output for N images; ``grid`` (N, L, D_g) and ``mask`` (N, L)
                are used.

        Returns:
            AttentionState with h (and c) from an MLP of the mean real region, the projected
            grid, the grid (padding zeroed) and the mask.
        """
        mask = features.mask
        grid = zero_padding(features.grid, mask)  # (N, L, D_g)
        mean = region_mean(grid, mask)  # (N, D_g)
        h = torch.tanh(self.init_h(mean))  # (N, H)
        c = torch.tanh(self.init_c(mean)) if self.init_c is not None else None
        return AttentionState(h, c, self.attention.project(grid), grid, mask=mask)

    def reorder_state(self, state: AttentionState, index: Tensor) -> AttentionState:
        """Rows `index` of the state (beam search): gathers h, c and the row-to-image index."""
        image = index if state.image is None else state.image.index_select(0, index)
        c = state.c.index_select(0, index) if state.c is not None else None
        return state._replace(h=state.h.index_select(0, index), c=c, image=image)

    # -- one step ------------------------------------------------------------------------------

    def _advance(
        self, embedded: Tensor, state: AttentionState
    ) -> tuple[AttentionState, Tensor, Tensor]:
        """One recurrence step: attend with h_{t-1}, gate the context, run the cell; returns the
        new state, the gated context z_t (N, D_g) and alpha_t (N, L)."""
        h, c = state.h, state.c
        context, alpha = self.attention(state.projected, state.grid, h, state.image, state.mask)
        beta = torch.sigmoid(self.f_beta(h))  # (N, 1)
        context = beta * context  # (N, D_g): z_t
        x = torch.cat([embedded, context], dim=-1)  # (N, E + D_g)
        if c is not None:
            h, c = self.cell(x, (h, c))
        else:
            h = self.cell(x, h)
        return state._replace(h=h, c=c), context, alpha

    def _logits(self, embedded: Tensor, hidden: Tensor, context: Tensor) -> Tensor:
        """Deep output layer, eq. 7: ``L_o(E y_{t-1} + L_h h_t + L_z z_t)`` (any leading dims;
        `context` is the gated z_t)."""
        deep = embedded + self.out_h(hidden) + self.out_z(context)  # (..., E)
        return self.out(self.drop(deep))  # (..., V)

    def step(
        self, tokens: Tensor, state: AttentionState, features: EncoderOutput
    ) -> tuple[Tensor, AttentionState, dict[str, Tensor]]:
        """Feed one word per row.

        Args:
            tokens: (N,) previous words.
            state: the state from :meth:`init_state` or the previous step.
            features: the encoder output for the same N rows (the state already holds the
                grid it attends over).

        Returns:
            log-probabilities (N, V), the new state, and ``{"alpha": (N, L)}``.
        """
        embedded = self.embed(tokens)  # (N, E)
        state, context, alpha = self._advance(embedded, state)
        logits = self._logits(embedded, state.h, context)  # (N, V)
        return step_log_softmax(logits), state, {"alpha": alpha}

    # -- teacher forcing -----------------------------------------------------------------------

    def forward(
        self,
        features: EncoderOutput,
        inputs: Tensor,
        lengths: Tensor,
        *,
        return_alphas: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher-forced pass: one cell step per word, for the captions that have that word.

        The captions are sorted by length once (longest first), so the captions still running at
        step t are the first n_t rows, and step t computes only those (the tutorials'
        ``batch_size_t``); the grid is projected once, for the sorted rows. The output layers then
        run once, on the real positions only. Padded positions (t >= length) cost nothing and
        get zero logits and zero attention weights; real positions are unchanged (a caption's
        steps never depend on the other rows).

        Args:
            features: the encoder output for B rows (one per caption).
            inputs: (B, T) input words `<start> w1 ... wn`, right-padded.
            lengths: (B,) number of real input words per row (<= T).
            return_alphas: also return the attention weights.

        Returns:
            logits (B, T, V), or (logits, alphas (B, T, L)), both zero at padded positions.
        """
        schedule = LengthSchedule(lengths, inputs.size(1))
        features, inputs = schedule.sort_rows(features, inputs)
        embedded = self.embed(inputs)  # (B, T, E), rows sorted
        state = self.init_state(features)
        hiddens, contexts, alphas = [], [], []
        for t, n in enumerate(schedule.running):
            state = _first_rows(state, n)
            state, context, alpha = self._advance(embedded[:n, t], state)
            hiddens.append(state.h)  # (n_t, H)
            contexts.append(context)  # (n_t, D_g)
            alphas.append(alpha)  # (n_t, L)
        if schedule.full:  # no padding: no gathering
            hidden, context = torch.stack(hiddens, dim=1), torch.stack(contexts, dim=1)
            logits = self._logits(embedded, hidden, context)  # (B, T, V)
            return (logits, torch.stack(alphas, dim=1)) if return_alphas else logits  # (B, T, L)
        src, dst = schedule.positions(inputs.device)  # (P,) each
        emb = embedded.flatten(0, 1).index_select(0, src)  # (P, E)
        hidden = cat_steps(hiddens, self.cell.hidden_size, emb)  # (P, H)
        context = cat_steps(contexts, features.grid.size(-1), emb)  # (P, D_g)
        logits = schedule.scatter(self._logits(emb, hidden, context), dst)  # (B, T, V)
        if not return_alphas:
            return logits
        alpha = cat_steps(alphas, features.grid.size(1), emb)  # (P, L)
        return logits, schedule.scatter(alpha, dst)  # (B, T, L)

    def attention_penalty(
        self, alphas: Tensor, lengths: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        """The doubly stochastic regulariser (eq. 14) of a batch, to add to its summed loss:
        :func:`captioning.models.attention.attention_penalty` with this decoder's ``alpha_c``
        and ``alpha_c_per``.

        Args:
            alphas: (B, T, L) attention weights from ``forward(..., return_alphas=True)``.
            lengths: (B,) real steps per row.
            mask: (B, L) bool, ``True`` for real regions (None: all L are real).

        Returns:
            A scalar to add to the batch's loss summed over target words.
        """
        return attention_penalty(alphas, lengths, mask, weight=self.alpha_c, per=self.alpha_c_per)
