"""What every decoding strategy shares: the rows of the working batch, their features, the
start of a decoding, the decoder step (with the words decoding never emits, `<pad>` and
`<start>`, masked) and n-gram blocking. :mod:`captioning.decoding.sampling` and
:mod:`captioning.decoding.beam_search` build on this module.

Decoding keeps only the rows that are still running: a caption that has ended (greedy,
sampling) or an image whose answer is settled (beam search) leaves the working batch, so the cost
of a batch follows the words actually generated. Rows leave through ``decoder.reorder_state``
(the step contract) and :meth:`RowFeatures.select`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from captioning.contracts import CaptionDecoder, EncoderOutput
from captioning.errors import CaptioningError

__all__ = ["RowFeatures", "ban_repeats", "decoder_of", "never_emitted", "rows_of", "start", "step"]


class RowFeatures:
    """The encoder output of N decoding rows that point at B images, gathered on first use.

    It offers what decoders read from an :class:`EncoderOutput` (``vector``, ``grid``,
    ``mask``, ``select``). Each tensor is gathered per row only when a decoder reads it, once per set of
    rows: the LSTM reads ``vector`` (N, D_v) at every step, the attention decoder keeps its grid
    in its state and reads neither, so dropping finished rows never copies the (N, L, D_g) grid.

    Args:
        features: the encoder output of the B images.
        image: (N,) the image of each row.
    """

    def __init__(self, features: EncoderOutput, image: Tensor) -> None:
        self.images, self.image = features, image
        self._cache: dict[str, Tensor] = {}

    def _rows(self, name: str) -> Tensor:
        if name not in self._cache:
            self._cache[name] = getattr(self.images, name).index_select(0, self.image)
        return self._cache[name]

    @property
    def vector(self) -> Tensor:
        """(N, D_v) image vector of each row."""
        return self._rows("vector")

    @property
    def grid(self) -> Tensor:
        """(N, L, D_g) region features of each row."""
        return self._rows("grid")

    @property
    def mask(self) -> Tensor | None:
        """(N, L) bool real regions of each row, or None when every region is real."""
        return None if self.images.mask is None else self._rows("mask")

    def select(self, index: Tensor) -> RowFeatures:
        """Rows `index` (no copy of any feature until one is read)."""
        return RowFeatures(self.images, self.image.index_select(0, index))


def rows_of(features: EncoderOutput | None, image: Tensor) -> RowFeatures | None:
    """:class:`RowFeatures` of rows `image` (N,), or None for an image-free decoder."""
    return RowFeatures(features, image) if features is not None else None


def decoder_of(model: nn.Module) -> CaptionDecoder:
    """The decoder of a CaptionModel, or `model` itself when it is a decoder."""
    return model.decoder if hasattr(model, "decoder") and hasattr(model, "encoder") else model


def start(
    decoder: CaptionDecoder, features: EncoderOutput | None, batch_size: int | None
) -> tuple[Any, int, torch.device]:
    """The initial state, B and the device of a decoding (B = `batch_size` when `features` is
    None: an image-free decoder)."""
    if features is not None:
        return decoder.init_state(features), features.vector.size(0), features.vector.device
    if batch_size is None:
        raise CaptioningError("an image-free decoder needs batch_size= to start decoding")
    device = next(decoder.parameters()).device
    return decoder.init_state(None, batch_size=batch_size), batch_size, device


def never_emitted(bos_id: int, eos_id: int, pad_id: int, device: torch.device) -> Tensor:
    """The ids no strategy emits: `<start>` and `<pad>` (unless one of them is also `<end>`)."""
    ids = sorted({bos_id, pad_id} - {eos_id})
    return torch.tensor(ids, dtype=torch.long, device=device)


def step(
    decoder: CaptionDecoder, tokens: Tensor, state: Any, features: Any, never: Tensor
) -> tuple[Tensor, Any, dict[str, Tensor]]:
    """``decoder.step`` with the words of `never` (:func:`never_emitted`) at -inf.

    Every strategy reads its log-probabilities here, so greedy, sampling and beam search never
    emit `<pad>` or `<start>`. The other words keep the model's log-probabilities (not
    renormalised), so a caption's score stays its log-probability under the model.

    Returns:
        logprobs (N, V), the new state, the step's extras.
    """
    logprobs, state, extras = decoder.step(tokens, state, features)  # (N, V)
    return logprobs.index_fill(1, never, -math.inf), state, extras


def ban_repeats(logprobs: Tensor, history: Tensor, n: int) -> Tensor:
    """-inf for every word that would repeat an n-gram of `history` (N, t); logprobs (N, V)."""
    t, v = history.size(1), logprobs.size(-1)
    if t < n:
        return logprobs
    windows = history.unfold(1, n, 1)  # (N, t - n + 1, n) every n-gram so far
    prefix = history[:, t - n + 1 :].unsqueeze(1)  # (N, 1, n - 1) the words the next one follows
    seen = (windows[..., :-1] == prefix).all(dim=-1)  # (N, W)
    banned = windows[..., -1].masked_fill(~seen, v)  # (N, W); column v means "nothing"
    mask = logprobs.new_zeros(logprobs.size(0), v + 1, dtype=torch.bool)
    mask.scatter_(1, banned, True)  # (N, V + 1)
    return logprobs.masked_fill(mask[:, :v], -math.inf)
