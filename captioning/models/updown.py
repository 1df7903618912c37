"""Up-Down decoder (Anderson et al. 2018, Bottom-Up and Top-Down Attention): two LSTMs per word.

For regions ``v_i`` (i = 1..K, the real ones of an image: pre-extracted object features, or the
K = L cells of an encoder grid), their mean ``v̄ = 1/K sum_i v_i`` and the previous word
``y_{t-1}``, each step computes (``;`` is concatenation):

    h1_t     = LSTM_att([h2_{t-1}; v̄; W_e y_{t-1}], h1_{t-1})      attention LSTM
    a_{i,t}  = w_a^T tanh(W_va v_i + W_ha h1_t)                    additive attention
    alpha_t  = softmax_i(a_t)                                      over real regions only
    v̂_t      = sum_i alpha_{i,t} v_i
    h2_t     = LSTM_lang([v̂_t; h1_t], h2_{t-1})                   language LSTM
    p(y_t)   = softmax(W_p h2_t + b_p)

Where the paper is silent, this follows the implementation most results are reported with,
ruotianluo's self-critical.pytorch (``captioning/models/AttModel.py``: ``UpDownCore``,
``Attention``, ``AttModel._prepare_feature``):

* the regions are embedded first, ``v_i = dropout(ReLU(W_emb v_i^raw + b))`` to the LSTM size
  (its ``att_embed``), and attention and v̂ use the embedded regions; ``embed_regions=False``
  attends over the raw features as the paper's equations read;
* v̄ is ``dropout(ReLU(W_fc mean_i v_i^raw + b))`` (its ``fc_embed`` of the fc feature, which
  for bottom-up features is the mean of the regions);
* word embeddings are ``dropout(ReLU(W_e y))``; dropout on h2_t before ``W_p``; zero initial
  states; biases on the projections (``W_va v_i + b``; a bias on ``w_a`` cancels in the softmax).

Deliberate differences from that implementation:

* v̄ is always the masked mean of the regions given, never a separate fc vector (the paper's
  definition; identical to the reference on bottom-up features, whose fc file is that mean);
* padding gets an energy of -inf before the softmax (weight exactly 0) instead of a softmax over
  all L followed by zeroing and renormalising: the same function, but a padded image gives
  exactly its unpadded outputs;
* the vocabulary has `<pad>`, `<start>`, `<end>`, `<unk>` (the reference uses index 0 for both
  start and end).

``W_va v_i + b`` does not depend on t: :meth:`UpDownDecoder.init_state` computes it once per
image (with the embedded regions and v̄); rows that share an image (beam hypotheses) point at it
through an index, so :meth:`UpDownDecoder.reorder_state` never copies it.
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

__all__ = ["UpDownDecoder", "UpDownState"]


class UpDownState(NamedTuple):
    """Recurrent state of :class:`UpDownDecoder`: per-row tensors have the rows on dim 0.

    Attributes:
        h1, c1: (N, H) attention LSTM state of each row.
        h2, c2: (N, H) language LSTM state of each row.
        regions: (M, K, D) the (embedded) regions of each image, padding zeroed.
        projected: (M, K, A) ``W_va v_i + b``, once per image.
        mean: (M, D_v̄) v̄ of each image.
        mask: (M, K) bool real regions, or None when all are real.
        image: (N,) the image of each row, or None while row n is image n.
    """

    h1: Tensor
    c1: Tensor
    h2: Tensor
    c2: Tensor
    regions: Tensor
    projected: Tensor
    mean: Tensor
    mask: Tensor | None = None
    image: Tensor | None = None


def _first_rows(state: UpDownState, n: int) -> UpDownState:
    """The first `n` rows of a state whose row i is image i (views, no copies)."""
    if state.h1.size(0) == n:
        return state
    mask = state.mask[:n] if state.mask is not None else None
    rows = (state.h1[:n], state.c1[:n], state.h2[:n], state.c2[:n])
    return UpDownState(*rows, state.regions[:n], state.projected[:n], state.mean[:n], mask)


class UpDownDecoder(nn.Module):
    """The Up-Down captioner's top-down part (the step contract,
    :class:`captioning.contracts.CaptionDecoder`).

    Args:
        vocab_size: output vocabulary size V.
        vector_dim: accepted for a uniform builder signature; unused (v̄ is the regions' mean).
        grid_dim: size of each region feature (2048 for bottom-up features; the encoder's).
        embed_dim: word embedding size E (the paper: 1000).
        hidden_dim: size H of both LSTMs, and of the embedded regions (the paper: 1000).
        attention_dim: size A of the attention layer (the paper: 512).
        dropout: dropout on the word, region and v̄ embeddings and on h2_t (the reference: 0.5).
        embed_regions: embed regions and v̄ with ReLU layers first (the reference); False
            attends over the raw features.
        alpha_c: weight of Show-Attend-Tell's doubly stochastic regulariser (not in the paper: 0).
        alpha_c_per: ``"caption"`` or ``"word"``, as for the attention decoder.
        pad_id: id of ``<pad>`` (its embedding is kept at zero).
    """

    has_attention = True

    def __init__(
        self,
        *,
        vocab_size: int,
        vector_dim: int | None = None,
        grid_dim: int,
        embed_dim: int = 1000,
        hidden_dim: int = 1000,
        attention_dim: int = 512,
        dropout: float = 0.5,
        embed_regions: bool = True,
        alpha_c: float = 0.0,
        alpha_c_per: str = "caption",
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if not grid_dim or grid_dim < 1:
            raise CaptioningError(
                f"the Up-Down decoder attends over regions (grid_dim >= 1), got {grid_dim}; "
                "use an encoder with a grid or encoder=precomputed"
            )
        if alpha_c_per not in ("caption", "word"):
            raise CaptioningError(f"alpha_c_per={alpha_c_per!r}: use 'caption' or 'word'")
        self.vocab_size, self.alpha_c, self.alpha_c_per = vocab_size, float(alpha_c), alpha_c_per
        region_dim = hidden_dim if embed_regions else grid_dim
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.drop = nn.Dropout(dropout)
        self.region_embed = nn.Linear(grid_dim, hidden_dim) if embed_regions else None
        self.mean_embed = nn.Linear(grid_dim, hidden_dim) if embed_regions else None
        self.att_lstm = nn.LSTMCell(hidden_dim + region_dim + embed_dim, hidden_dim)
        self.attention = SoftAttention(region_dim, hidden_dim, attention_dim)
        self.lang_lstm = nn.LSTMCell(region_dim + hidden_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, vocab_size)  # W_p, b_p

    # -- state ---------------------------------------------------------------------------------

    def _words(self, tokens: Tensor) -> Tensor:
        """``dropout(ReLU(W_e y))`` (..., E)."""
        return self.drop(torch.relu(self.embed(tokens)))

    def _embed(self, layer: nn.Linear | None, x: Tensor) -> Tensor:
        """``dropout(ReLU(layer(x)))``, or `x` itself without region embeddings."""
        return x if layer is None else self.drop(torch.relu(layer(x)))

    def init_state(self, features: EncoderOutput) -> UpDownState:
        """Zero LSTM states, and what every step reuses, computed once per image.

        Args:
            features: the encoder output for N images: ``grid`` (N, K, D_g) and ``mask`` (N, K).

        Returns:
            UpDownState with the embedded regions, ``W_va v_i + b`` and v̄ of every image.
        """
        mask = features.mask
        raw = zero_padding(features.grid, mask)  # (N, K, D_g)
        mean = self._embed(self.mean_embed, region_mean(raw, mask))  # (N, D)
        regions = zero_padding(self._embed(self.region_embed, raw), mask)  # (N, K, D)
        zeros = raw.new_zeros(raw.size(0), self.att_lstm.hidden_size)  # (N, H)
        projected = self.attention.project(regions)  # (N, K, A)
        return UpDownState(zeros, zeros, zeros, zeros, regions, projected, mean, mask)

    def reorder_state(self, state: UpDownState, index: Tensor) -> UpDownState:
        """Rows `index` of the state (beam search): the LSTM states and the row-to-image index;
        the per-image tensors stay as they are."""
        image = index if state.image is None else state.image.index_select(0, index)
        h1, c1, h2, c2 = (x.index_select(0, index) for x in state[:4])
        return state._replace(h1=h1, c1=c1, h2=h2, c2=c2, image=image)

    # -- one step ------------------------------------------------------------------------------

    def _advance(self, words: Tensor, state: UpDownState) -> tuple[UpDownState, Tensor]:
        """Both LSTMs for one word per row (embedded, (N, E)); the new state and alpha (N, K)."""
        mean = state.mean if state.image is None else state.mean.index_select(0, state.image)
        x1 = torch.cat([state.h2, mean, words], dim=-1)  # (N, H + D + E)
        h1, c1 = self.att_lstm(x1, (state.h1, state.c1))  # (N, H) each
        attended, alpha = self.attention(
            state.projected, state.regions, h1, state.image, state.mask
        )  # (N, D), (N, K)
        x2 = torch.cat([attended, h1], dim=-1)  # (N, D + H)
        h2, c2 = self.lang_lstm(x2, (state.h2, state.c2))  # (N, H) each
        return state._replace(h1=h1, c1=c1, h2=h2, c2=c2), alpha

    def step(
        self, tokens: Tensor, state: UpDownState, features: EncoderOutput | None
    ) -> tuple[Tensor, UpDownState, dict[str, Tensor]]:
        """Feed one word per row.

        Args:
            tokens: (N,) previous words.
            state: the state from :meth:`init_state` or the previous step.
            features: the encoder output of the same N rows (unused: the state holds what the
                step needs).

        Returns:
            log-probabilities (N, V), the new state, and ``{"alpha": (N, K)}``.
        """
        state, alpha = self._advance(self._words(tokens), state)
        logits = self.out(self.drop(state.h2))  # (N, V)
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
        """Teacher-forced pass: one step per word for the captions that have that word.

        As :meth:`captioning.models.attention_decoder.AttentionDecoder.forward`: captions sorted
        by length once, step t runs the n_t captions still going, the output layer runs once on
        the real positions; padded positions get zero logits and weights.

        Args:
            features: the encoder output for B rows (one per caption).
            inputs: (B, T) input words `<start> w1 ... wn`, right-padded.
            lengths: (B,) number of real input words per row (<= T).
            return_alphas: also return the attention weights.

        Returns:
            logits (B, T, V), or (logits, alphas (B, T, K)).
        """
        schedule = LengthSchedule(lengths, inputs.size(1))
        features, inputs = schedule.sort_rows(features, inputs)
        words = self._words(inputs)  # (B, T, E), rows sorted
        state = self.init_state(features)
        hiddens, alphas = [], []
        for t, n in enumerate(schedule.running):
            state, alpha = self._advance(words[:n, t], _first_rows(state, n))
            hiddens.append(state.h2)  # (n_t, H)
            alphas.append(alpha)  # (n_t, K)
        _, dst = schedule.positions(inputs.device)  # (P,)
        hidden = cat_steps(hiddens, self.lang_lstm.hidden_size, words)  # (P, H)
        logits = schedule.scatter(self.out(self.drop(hidden)), dst)  # (B, T, V)
        if not return_alphas:
            return logits
        alpha = cat_steps(alphas, features.grid.size(1), words)  # (P, K)
        return logits, schedule.scatter(alpha, dst)  # (B, T, K)

    def attention_penalty(
        self, alphas: Tensor, lengths: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        """``alpha_c`` times Show-Attend-Tell's regulariser
        (:func:`captioning.models.attention.attention_penalty`); 0 by default, as in the paper.

        Args:
            alphas: (B, T, K) weights from ``forward(..., return_alphas=True)``.
            lengths: (B,) real steps per row.
            mask: (B, K) bool real regions (None: all).

        Returns:
            A scalar to add to the batch's summed loss.
        """
        if self.alpha_c == 0.0:
            return alphas.new_zeros(())
        return attention_penalty(alphas, lengths, mask, weight=self.alpha_c, per=self.alpha_c_per)
