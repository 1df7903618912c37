"""Recurrent caption decoder: vanilla RNN, LSTM or GRU with the image injected into the recurrence.

Kept as one file (about 390 lines): the three cells share one fused teacher-forced pass, one
step and the image fold, which must stay equal to each other (tested).

Image injection (`image_injection`):

* ``every_step`` (neuraltalk / the lectures): the image vector ``v`` is part of every step's input,
  so the first layer computes ``h_t = tanh(W_xh x_t + W_hh h_{t-1} + W_ih v + b)`` for the vanilla
  RNN, and adds the same ``W_ih v`` term to every gate pre-activation for LSTM / GRU. It is
  implemented by feeding ``[x_t; v]`` to the cell, whose input weight is ``[W_xh | W_ih]``
  (checkpoints hold that one weight). ``W_ih v`` is the same for the whole caption, so it is
  computed once per caption row in the teacher-forced pass (:meth:`RNNDecoder._fold_image`) and
  once per image in step-wise decoding: :meth:`RNNDecoder.init_state` returns an
  :class:`ImageTermState` that carries ``W_ih v + b_ih`` (beam search and sampling expand it with
  the rest of the state, so a beam's hypotheses share their image's), and each step multiplies
  only the word by ``W_xh`` (:func:`captioning.models.cells.stacked_step`).
* ``init_state``: ``v`` is projected into the initial hidden (and cell) state of every layer.
* ``first_input`` (Show and Tell): ``v``, projected to the embedding size, is the input at step 0,
  before ``<start>``.
* ``none``: no image; the decoder is a plain (unconditional) language model.

The teacher-forced pass runs the whole (packed) sequence through the fused cuDNN / oneDNN kernel
behind ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (``torch.rnn_tanh`` / ``torch.lstm`` / ``torch.gru``,
called with the module's weights); :meth:`RNNDecoder.step` runs the module itself one step at a
time for decoding, so both paths compute the same function.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from captioning.contracts import EncoderOutput
from captioning.errors import CaptioningError
from captioning.models.cells import stacked_step
from captioning.models.stepping import step_log_softmax

__all__ = ["CELLS", "INJECTIONS", "ImageTermState", "RNNDecoder", "State", "reorder_state"]

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
# The fused kernels behind nn.RNN / nn.LSTM / nn.GRU, called with a weight list of our own.
_KERNELS = {"rnn": torch.rnn_tanh, "lstm": torch.lstm, "gru": torch.gru}
INJECTIONS = ("every_step", "init_state", "first_input", "none")

State = Any  # a tensor, or a tuple of tensors, with the batch on dim 1 (num_layers, N, H)


class ImageTermState(NamedTuple):
    """The step-wise state of an ``every_step`` decoder: the recurrent state and the first
    layer's image term, computed once per image by :meth:`RNNDecoder.init_state`.

    Attributes:
        recurrent: (num_layers, N, H), or ``(h, c)`` for the LSTM.
        image: (1, N, G) ``W_ih v + b_ih`` of each row (G = gates x H); batch on dim 1 like the
            rest, so :func:`reorder_state` gathers it with the hypotheses.
    """

    recurrent: State
    image: Tensor


def reorder_state(state: State, index: Tensor) -> State:
    """Gather batch rows `index` of every tensor in `state` (batch on dim 1)."""
    if isinstance(state, Tensor):
        return state.index_select(1, index)
    parts = (reorder_state(s, index) for s in state)
    return type(state)(*parts) if hasattr(state, "_fields") else type(state)(parts)


class RNNDecoder(nn.Module):
    """Word decoder over an image vector, with the step contract (:class:`captioning.contracts.CaptionDecoder`).

    Args:
        vocab_size: output vocabulary size V.
        vector_dim: size D_v of the encoder's image vector (0 with ``image_injection="none"``).
        grid_dim: accepted for a uniform builder signature; unused (no attention).
        cell: ``"rnn"`` (tanh), ``"lstm"`` or ``"gru"``.
        embed_dim: word embedding size E.
        hidden_dim: hidden size H.
        num_layers: stacked recurrent layers.
        dropout: dropout between recurrent layers and before the output layer.
        image_injection: ``every_step`` | ``init_state`` | ``first_input`` | ``none``.
        tie_weights: share the embedding matrix with the output layer (needs E == H).
        pad_id: id of ``<pad>`` (its embedding is kept at zero).
    """

    has_attention = False

    def __init__(
        self,
        *,
        vocab_size: int,
        vector_dim: int,
        grid_dim: int | None = None,
        cell: str = "lstm",
        embed_dim: int = 256,
        hidden_dim: int = 512,
        num_layers: int = 1,
        dropout: float = 0.0,
        image_injection: str = "every_step",
        tie_weights: bool = False,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise CaptioningError(f"unknown decoder cell {cell!r}; choose one of {sorted(CELLS)}")
        if image_injection not in INJECTIONS:
            raise CaptioningError(
                f"unknown image_injection {image_injection!r}; choose one of {list(INJECTIONS)}"
            )
        if num_layers < 1:
            raise CaptioningError(f"num_layers must be >= 1, got {num_layers}")
        if tie_weights and embed_dim != hidden_dim:
            raise CaptioningError(
                f"tie_weights needs embed_dim == hidden_dim (got {embed_dim} and {hidden_dim})"
            )
        self.vocab_size, self.cell, self.image_injection = vocab_size, cell, image_injection
        self.hidden_dim, self.num_layers = hidden_dim, num_layers
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        input_dim = embed_dim + (vector_dim if image_injection == "every_step" else 0)
        kwargs = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.rnn = CELLS[cell](
            input_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            **kwargs,
        )
        if image_injection == "init_state":
            n_states = 2 if cell == "lstm" else 1
            self.init_proj = nn.Linear(vector_dim, n_states * num_layers * hidden_dim)
        elif image_injection == "first_input":
            self.image_embed = nn.Linear(vector_dim, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, vocab_size)
        if tie_weights:
            self.out.weight = self.embed.weight

    # -- state ---------------------------------------------------------------------------------

    def _zeros(self, n: int, ref: Tensor) -> State:
        h = ref.new_zeros(self.num_layers, n, self.hidden_dim)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def _initial(self, features: EncoderOutput | None, n: int, ref: Tensor) -> State:
        """State before the first word (and before the image step of ``first_input``)."""
        if self.image_injection != "init_state":
            return self._zeros(n, ref)
        proj = torch.tanh(self.init_proj(features.vector))  # (N, S * layers * H)
        proj = proj.view(n, -1, self.num_layers, self.hidden_dim).permute(1, 2, 0, 3)
        proj = proj.contiguous()  # (S, layers, N, H)
        return (proj[0], proj[1]) if self.cell == "lstm" else proj[0]

    def _inputs(self, embedded: Tensor, features: EncoderOutput | None) -> Tensor:
        """Append the image vector to each step's input for ``every_step``."""
        if self.image_injection != "every_step":
            return embedded
        v = features.vector.unsqueeze(1).expand(-1, embedded.size(1), -1)  # (N, T, D_v)
        return torch.cat([embedded, v.to(embedded.dtype)], dim=-1)  # (N, T, E + D_v)

    def _batch_ref(
        self, features: EncoderOutput | None, batch_size: int | None
    ) -> tuple[int, Tensor]:
        if features is not None:
            return features.vector.size(0), features.vector
        if batch_size is None:
            raise CaptioningError("an image-free decoder needs batch_size to start a sequence")
        return batch_size, self.out.weight

    def init_state(self, features: EncoderOutput | None, *, batch_size: int | None = None) -> State:
        """The recurrent state before `<start>` is fed.

        Args:
            features: the encoder output for N images (None for ``image_injection="none"``).
            batch_size: N when there are no features.

        Returns:
            State with the batch on dim 1.
        """
        n, ref = self._batch_ref(features, batch_size)
        state = self._initial(features, n, ref)
        if self.image_injection == "first_input":
            x0 = self.image_embed(features.vector).unsqueeze(1)  # (N, 1, E)
            _, state = self.rnn(x0, state)
        elif self.image_injection == "every_step":
            state = ImageTermState(state, self._image_term(features.vector))
        return state

    def _image_term(self, vector: Tensor) -> Tensor:
        """``W_ih v + b_ih`` (1, N, G) of the first layer for image vectors `vector` (N, D_v)."""
        w_in = self.rnn.weight_ih_l0  # (G, E + D_v)
        w_ih = w_in[:, self.embed.embedding_dim :]  # (G, D_v)
        return F.linear(vector.to(w_in.dtype), w_ih, self.rnn.bias_ih_l0).unsqueeze(0)

    def reorder_state(self, state: State, index: Tensor) -> State:
        """Gather rows of the state (beam search)."""
        return reorder_state(state, index)

    # -- one step and the fused pass ----------------------------------------------------------

    def step(
        self, tokens: Tensor, state: State, features: EncoderOutput | None
    ) -> tuple[Tensor, State, dict[str, Tensor]]:
        """Feed one word per row.

        Args:
            tokens: (N,) previous words.
            state: the state from :meth:`init_state` or the previous step (for ``every_step``
                also a bare recurrent state, e.g. one returned by :meth:`forward`; the image
                term is then computed from `features`).
            features: the encoder output for the same N rows (not read by ``every_step`` when
                `state` carries the image term).

        Returns:
            log-probabilities (N, V), the new state, and extras (none for this decoder).
        """
        if self.image_injection == "every_step":
            if not isinstance(state, ImageTermState):
                state = ImageTermState(state, self._image_term(features.vector))
            x = self.embed(tokens)  # (N, E)
            out, recurrent = stacked_step(self.rnn, self.cell, x, state.image[0], state.recurrent)
            state = ImageTermState(recurrent, state.image)  # out: (N, H)
        else:
            x = self._inputs(self.embed(tokens).unsqueeze(1), features)  # (N, 1, E)
            out, state = self.rnn(x, state)  # (N, 1, H)
            out = out.squeeze(1)
        logits = self.out(self.drop(out))  # (N, V)
        return step_log_softmax(logits), state, {}  # (in place when decoding: one buffer less)

    def forward(
        self,
        features: EncoderOutput | None,
        inputs: Tensor,
        lengths: Tensor,
        *,
        state: State | None = None,
        return_state: bool = False,
    ) -> Tensor | tuple[Tensor, State]:
        """Teacher-forced pass over whole sequences, fused over time.

        Batches without padding (every row ``lengths == T``, as in fixed-length language-model
        chunks) skip packing, which would only copy the inputs. With ``every_step`` and fewer
        rows than image dimensions, ``W_ih v`` is computed once per row (:meth:`_fold_image`).

        Args:
            features: the encoder output for B images (None for an image-free decoder).
            inputs: (B, T) input words `<start> w1 ... wn`, right-padded.
            lengths: (B,) number of real input words per row.
            state: start from this state (batch on dim 1) instead of the initial one, e.g. the
                previous chunk's final state in truncated backpropagation through time; the image
                step of ``first_input`` is then not run again. An :class:`ImageTermState` is
                read for its recurrent part.
            return_state: also return the state after each row's last real word.

        Returns:
            logits (B, T, V), or ``(logits, state)`` with `return_state`; `logits[:, t]` predicts
            word t + 1. The output layer runs on real positions only: padded ones are zero.
        """
        b = inputs.size(0)
        _, ref = self._batch_ref(features, b)
        embedded = self.embed(inputs)  # (B, T, E)
        weights = None
        if self.image_injection == "every_step" and b < features.vector.size(1):
            x, weights = self._fold_image(embedded, features.vector)  # (B, T, E + B)
        else:
            x = self._inputs(embedded, features)  # (B, T, E [+ D_v])
        if isinstance(state, ImageTermState):
            state = state.recurrent
        steps = lengths.cpu()
        image_step = state is None and self.image_injection == "first_input"
        if state is None:
            state = self._initial(features, b, ref)
        if image_step:
            x0 = self.image_embed(features.vector).unsqueeze(1)  # (B, 1, E)
            x = torch.cat([x0, x], dim=1)  # (B, T + 1, E)
            steps = steps + 1
        # packed sequences keep each row's state at its last real step; on the CPU the padded
        # batch runs faster through the fused kernel (oneDNN) than the packed one does, except
        # in float16, which oneDNN's RNN kernels lack (CPU autocast to fp16, used by the tests)
        pack = return_state or x.device.type != "cpu" or _float16_on_cpu(x)
        out, state = self._run(x, steps, state, weights, pack)  # (B, T', H) or packed
        if isinstance(out, PackedSequence):  # the output layer sees the real positions only
            if image_step:
                out = _without_first_step(out)
            logits = self.out(self.drop(out.data))  # (P, V)
            logits = _pad(out, logits, inputs.size(1))  # (B, T, V), zero where padded
        else:
            if image_step:
                out = out[:, 1:]  # (B, T, H): drop the image step's output
            logits = self._real_logits(out, lengths.cpu())  # (B, T, V)
        return (logits, state) if return_state else logits

    def _real_logits(self, out: Tensor, lengths: Tensor) -> Tensor:
        """The output layer on the real positions (t < length) of `out` (B, T, H) only; zero
        logits (B, T, V) at padded positions. `lengths` (B,) are on the host, as the positions
        are worked out there (no read back from the device)."""
        b, t, _ = out.shape
        if bool((lengths >= t).all()):
            return self.out(self.drop(out))  # (B, T, V)
        real = (torch.arange(t) < lengths.unsqueeze(1)).flatten()  # (B * T,)
        at = real.nonzero().squeeze(1).to(out.device, non_blocking=True)  # (P,)
        logits = self.out(self.drop(out.reshape(b * t, -1).index_select(0, at)))  # (P, V)
        return logits.new_zeros(b * t, logits.size(-1)).index_copy(0, at, logits).view(b, t, -1)

    def _fold_image(self, embedded: Tensor, vector: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Inputs and weights that give the first layer ``W_xh x_t + W_ih v`` with ``W_ih v``
        computed once per row instead of once per word.

        Feeding ``[x_t; v]`` multiplies the whole (B * T, E + D_v) input by ``[W_xh | W_ih]``,
        so ``W_ih v`` is recomputed at every word. Instead ``U = W_ih V^T`` (G, B) is computed
        once, and row b feeds ``[x_t; e_b]`` (``e_b`` the b-th unit vector) to the same kernel
        with input weight ``[W_xh | U]``: ``W_xh x_t + U e_b = W_xh x_t + W_ih v_b``, exactly.
        The input shrinks from E + D_v to E + B columns (the caller uses this when B < D_v), and
        gradients reach ``W_ih`` and ``v`` through U. The parameters are unchanged.

        Args:
            embedded: (B, T, E) word embeddings.
            vector: (B, D_v) image vectors.

        Returns:
            inputs (B, T, E + B) and the flat weight list for the fused kernel.
        """
        b, t, e = embedded.shape
        w_in = self.rnn.weight_ih_l0  # (G, E + D_v)
        w_xh, w_ih = w_in.split([e, w_in.size(1) - e], dim=1)  # one gradient copy, not two
        u = vector.to(w_in.dtype) @ w_ih.t()  # (B, G): W_ih v, once per row
        first = torch.cat([w_xh, u.t()], dim=1)  # (G, E + B)
        rows = torch.eye(b, dtype=embedded.dtype, device=embedded.device)  # (B, B)
        x = torch.cat([embedded, rows.unsqueeze(1).expand(b, t, b)], dim=-1)  # (B, T, E + B)
        return x, [first, *self._flat_weights()[1:]]

    def _run(
        self, x: Tensor, steps: Tensor, state: State, weights: list[Tensor] | None, pack: bool
    ) -> tuple[Tensor | PackedSequence, State]:
        """The recurrent layers over (B, T', D) inputs of `steps` real steps each, fused over time:
        the kernel behind ``self.rnn``, with its own weights or with `weights`. With `pack` and
        padding, the outputs are packed (the real steps only) and the state is each row's after
        its last real step; otherwise the outputs are (B, T') and padded rows run on through
        their padding (their later outputs and final state are not meaningful)."""
        rnn, kernel = self.rnn, _KERNELS[self.cell]
        weights = weights if weights is not None else self._flat_weights()
        args = (weights, rnn.bias, rnn.num_layers, float(rnn.dropout), rnn.training, False)
        with warnings.catch_warnings():  # cuDNN packs a weight list it did not lay out: expected
            warnings.filterwarnings("ignore", message="RNN module weights are not part")
            if not pack or bool((steps == x.size(1)).all()):  # no packing: it only copies
                out, *new = kernel(x, state, *args, True)  # batch_first
                return out, (tuple(new) if self.cell == "lstm" else new[0])
            packed = pack_padded_sequence(x, steps, batch_first=True, enforce_sorted=False)
            hx = reorder_state(state, packed.sorted_indices)
            data, *new = kernel(packed.data, packed.batch_sizes, hx, *args)
        new = tuple(new) if self.cell == "lstm" else new[0]
        out = PackedSequence(
            data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
        )
        return out, reorder_state(new, packed.unsorted_indices)

    def _flat_weights(self) -> list[Tensor]:
        """``self.rnn``'s weights in its kernel's order (w_ih, w_hh, b_ih, b_hh per layer)."""
        return [w for layer in self.rnn.all_weights for w in layer]


def _float16_on_cpu(x: Tensor) -> bool:
    """Whether `x` (on the CPU) is, or is autocast to, float16."""
    autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.half
    return x.dtype == torch.half or autocast


def _without_first_step(packed: PackedSequence) -> PackedSequence:
    """`packed` without time step 0 (the image step of ``first_input``): its first
    ``batch_sizes[0]`` rows. Rows with no other step keep none."""
    first = int(packed.batch_sizes[0])
    return packed._replace(data=packed.data[first:], batch_sizes=packed.batch_sizes[1:])


def _pad(packed: PackedSequence, data: Tensor, total_length: int) -> Tensor:
    """`data` (P, D), one row per packed position of `packed`, as a right-padded
    (B, total_length, D) tensor with zeros at padded positions, rows in the caller's order.

    One ``index_copy`` (its backward one ``index_select``): ``pad_packed_sequence`` copies
    step by step, and its backward touches the whole (B, T, D) gradient once per step."""
    order = packed.sorted_indices  # (B,) original row of each sorted row
    b = order.numel()
    steps = [order[:n] * total_length + t for t, n in enumerate(packed.batch_sizes.tolist())]
    at = torch.cat([order[:0], *steps])  # (P,) flat (B * T) position of each packed row
    out = data.new_zeros(b * total_length, data.size(-1)).index_copy(0, at, data)
    return out.view(b, total_length, -1)  # (B, T, D)
