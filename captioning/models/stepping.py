"""What the step-by-step decoders share: the attention decoders' (Show-Attend-Tell, Up-Down)
teacher-forcing schedule over captions of different lengths, and every decoder's step log-softmax.

Teacher forcing sorts a batch's captions by length once (longest first), so the captions still
running at step t are the first n_t rows and step t computes only those (the tutorials'
``batch_size_t``). The output layers then run once, on the P real positions, and the results are
scattered back to (B, T, ...) in the caller's order with zeros at the padding. The schedule is
worked out on the host from the lengths, so a GPU is never read to plan it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from captioning.contracts import EncoderOutput

__all__ = ["LengthSchedule", "cat_steps", "step_log_softmax"]


class LengthSchedule:
    """The steps of a teacher-forced batch whose captions have different lengths.

    Args:
        lengths: (B,) real input words per row (<= steps), on any device.
        steps: T, the padded length of the batch.

    Attributes:
        batch: B.
        steps: T.
        order: (B,) on the host: the rows longest first (stable).
        running: n_t for each step t that any caption has.
        full: no padding at all (every caption has T words, none is left out).
    """

    def __init__(self, lengths: Tensor, steps: int) -> None:
        lengths = lengths.cpu()  # (B,) the schedule is worked out on the host
        self.batch, self.steps = lengths.numel(), steps
        self.order = torch.sort(lengths, descending=True, stable=True).indices  # (B,)
        self._sorted = bool((self.order == torch.arange(self.batch)).all())
        running = (lengths.unsqueeze(1) > torch.arange(steps)).sum(0).tolist()  # (T,) n_t
        self.running = [n for n in running if n > 0]
        self.full = len(self.running) == steps > 0 and self.running[-1] == self.batch

    def sort_rows(self, features: EncoderOutput, inputs: Tensor) -> tuple[EncoderOutput, Tensor]:
        """The batch's rows longest first (unchanged when they already are)."""
        if self._sorted:
            return features, inputs
        order = self.order.to(inputs.device, non_blocking=True)
        return features.select(order), inputs.index_select(0, order)

    def positions(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The P real positions, step by step (row i < n_t of the sorted batch at step t), as
        indices into the flattened (B * T) layout: ``src`` of the sorted rows, ``dst`` of the
        caller's rows. Both (P,), on `device`."""
        rows = torch.arange(self.batch)  # (B,)
        src = torch.cat(
            [rows[:0]] + [rows[:n] * self.steps + t for t, n in enumerate(self.running)]
        )
        dst = self.order[src // self.steps] * self.steps + src % self.steps  # (P,)
        return src.to(device, non_blocking=True), dst.to(device, non_blocking=True)

    def scatter(self, rows: Tensor, dst: Tensor) -> Tensor:
        """(B, T, D) zeros with ``rows`` (P, D) at the positions ``dst`` (from :meth:`positions`);
        differentiable in `rows`."""
        total = self.batch * self.steps
        out = rows.new_zeros(total, rows.size(-1)).index_copy(0, dst, rows)  # (B * T, D)
        return out.view(self.batch, self.steps, -1)


def cat_steps(parts: list[Tensor], width: int, like: Tensor) -> Tensor:
    """The steps' (n_t, D) outputs as one (P, D) tensor (a (0, `width`) one like `like` when no
    step ran)."""
    return torch.cat(parts) if parts else like.new_zeros((0, width))


def step_log_softmax(logits: Tensor) -> Tensor:
    """Log-probabilities (N, V) of one step; in place when no gradient is needed (decoding),
    which saves a (N, V) buffer per step."""
    if torch.is_grad_enabled():
        return logits.log_softmax(dim=-1)
    return torch.log_softmax(logits, -1, out=logits)
