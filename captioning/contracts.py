"""The two contracts every part of the project is written against.

**Encoder output.** An encoder maps images ``(B, 3, H, W)`` to an :class:`EncoderOutput`: a global
``vector`` (B, D_v), a ``grid`` of region features (B, L, D_g) and, when images have different
numbers of regions (pre-extracted object features), a ``mask`` (B, L) that is ``True`` for real
regions and ``False`` for padding. Show-and-Tell / neuraltalk2 decoders read ``vector``;
Show-Attend-and-Tell and Up-Down attend over ``grid`` (never over a masked region).

**Decoder step contract.** Every decoder implements :class:`CaptionDecoder`; training (teacher
forcing, scheduled sampling, self-critical sampling) and decoding (greedy, sampling, beam search)
rely on nothing else, so a new decoder that implements it works with all of them::

    state = decoder.init_state(features)                              # features: EncoderOutput
    logprobs, state, extras = decoder.step(tokens, state, features)   # (N,) -> (N, V)
    state = decoder.reorder_state(state, index)                       # beam search: gather rows
    logits = decoder(features, inputs, lengths)                       # teacher forcing, (B, T, V)

``extras`` carries per-step outputs such as the attention weights ``alpha`` (N, L). See
``docs/ARCHITECTURE.md`` for how the pieces fit together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["CaptionDecoder", "DecoderState", "EncoderOutput"]


class EncoderOutput(NamedTuple):
    """What an encoder returns for a batch of images.

    Attributes:
        vector: ``(B, D_v)`` fc7 after its ReLU (dropout only in train mode, never when frozen).
        grid: ``(B, L, D_g)`` last conv block before its final max-pool, flattened row-major
            (VGG-16 at 224 px: 14x14x512 -> ``L=196``, ``D_g=512``).
        mask: ``(B, L)`` bool, ``True`` for a real region and ``False`` for padding, or ``None``
            when every row has all ``L`` regions (grids). Every row has at least one real region.
    """

    vector: Tensor
    grid: Tensor
    mask: Tensor | None = None

    def select(self, index: Tensor) -> EncoderOutput:
        """Rows `index` of every tensor: one row per caption, or per beam hypothesis."""
        return self.apply(lambda t: t.index_select(0, index))

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> EncoderOutput:
        """On `device`, ``vector`` and ``grid`` as float32 (cached and pre-extracted features may
        be stored as float16); the mask stays bool."""
        moved = self.apply(lambda t: t.to(device, non_blocking=non_blocking))
        return moved._replace(vector=moved.vector.float(), grid=moved.grid.float())

    def apply(self, fn: Callable[[Tensor], Tensor]) -> EncoderOutput:
        """`fn` on ``vector`` and ``grid`` (and ``mask`` when there is one), e.g. ``.to(device)``."""
        mask = None if self.mask is None else fn(self.mask)
        return EncoderOutput(fn(self.vector), fn(self.grid), mask)


#: A decoder's recurrent state: whatever it needs between steps (a tensor, a tuple of tensors, a
#: NamedTuple). Only the decoder itself looks inside; search code only calls ``reorder_state``.
DecoderState = Any


@runtime_checkable
class CaptionDecoder(Protocol):
    """The decoder step contract (see the module docstring).

    Attributes:
        vocab_size: size V of the output vocabulary.
        has_attention: ``True`` when ``step`` returns ``extras["alpha"]`` (N, L) and the
            teacher-forced pass accepts ``return_alphas=True``.
    """

    vocab_size: int
    has_attention: bool

    def init_state(self, features: EncoderOutput | None) -> DecoderState:
        """The state before `<start>` is fed, for the N rows of `features`."""
        ...

    def step(
        self, tokens: Tensor, state: DecoderState, features: EncoderOutput | None
    ) -> tuple[Tensor, DecoderState, dict[str, Tensor]]:
        """Feed one word per row: tokens (N,) -> log-probabilities (N, V), new state, extras."""
        ...

    def reorder_state(self, state: DecoderState, index: Tensor) -> DecoderState:
        """Rows `index` (M,) of `state`: beam search keeps the hypotheses it extends."""
        ...

    def forward(
        self, features: EncoderOutput, inputs: Tensor, lengths: Tensor, **kwargs: Any
    ) -> Any:
        """Teacher forcing: inputs (B, T) `<start> w1 ... wn`, lengths (B,) -> logits (B, T, V)."""
        ...
