"""What one training epoch did (:class:`EpochStats`), the sums of its steps kept on the device
(:class:`StepSums`), an interrupted epoch's sums carried over a resume (:func:`merge_stats`), and
the checks that stop training on non-finite numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from captioning.errors import CaptioningError

__all__ = ["EpochStats", "NonFiniteLossError", "StepSums", "check_finite", "merge_stats"]

#: the sums of an interrupted epoch that a checkpoint keeps (and a resumed epoch adds to)
_PARTIAL = ("loss_sum", "words", "steps", "skipped", "seconds", "nonfinite", "bad_images")


class NonFiniteLossError(CaptioningError):
    """The loss (or its gradient) stayed non-finite for too many consecutive steps."""


@dataclass
class EpochStats:
    """What one training epoch did (``loss`` and ``words`` over all ranks when distributed)."""

    loss: float
    words: int  # units the loss is averaged over (target words for cross-entropy)
    steps: int
    seconds: float
    skipped: int = 0  # batches without an optimizer step (non-finite, or no readable image)
    # the objective's logs: per-step means, or per unit for its summed logs (``log_sums / words``)
    extra: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False  # stopped early by `should_stop`; ``steps + skipped`` batches done
    loss_sum: float = 0.0  # summed per-unit loss (``loss * words``, without rounding)
    nonfinite: int = 0  # steps skipped because the loss or the gradient norm was not finite
    nonfinite_streak: int = 0  # consecutive non-finite steps at the end of the epoch
    bad_images: int = 0  # images that could not be read and were left out (this rank)
    log_sums: dict[str, float] = field(default_factory=dict)  # the summed logs, epoch totals

    def faults(self) -> list[str]:
        """What went wrong but did not stop the epoch, e.g. ``["2 non-finite steps skipped"]``."""
        counts = (
            (self.nonfinite, "non-finite steps skipped"),
            (self.bad_images, "unreadable images skipped"),
        )
        return [f"{n} {what}" for n, what in counts if n]

    def partial(self) -> dict[str, Any]:
        """The sums, streak and logs of an interrupted epoch, as plain data for a checkpoint
        (:func:`merge_stats` adds them to the rest of the epoch after a resume)."""
        part: dict[str, Any] = {k: getattr(self, k) for k in _PARTIAL}
        part.update(
            nonfinite_streak=self.nonfinite_streak,
            extra=dict(self.extra),
            log_sums=dict(self.log_sums),
        )
        return part


class StepSums:
    """The summed loss, units and objective logs of an epoch's updated steps, kept where they are
    computed: adding a step reads nothing back to the host (on a GPU, no stall per step).

    Tensors are summed on the device in float64, in step order, so the sums are the host sums of
    ``float(value)`` they replace, bit for bit; logs an objective gives as Python numbers (self-
    critical rewards are computed on the host) are summed on the host.

    Args:
        names: the objective's ``log_names``.
        device: where training runs.
    """

    def __init__(self, names: Sequence[str], device: torch.device) -> None:
        self.names, self.device = tuple(names), device
        self.tensors = torch.zeros(2 + len(self.names), dtype=torch.float64, device=device)
        self.host = dict.fromkeys(self.names, 0.0)  # the logs given as numbers
        self._zero = torch.zeros((), device=device)

    def add(self, out: Any) -> None:
        """Add one step's :class:`~captioning.training.objectives.StepLoss` (no host read)."""
        parts = [out.total.detach(), out.count]
        for name in self.names:
            value = out.logs[name]
            if isinstance(value, Tensor):
                parts.append(value.detach())
            else:
                self.host[name] += float(value)
                parts.append(self._zero)
        step = [p.reshape(()).to(self.device, torch.float64, non_blocking=True) for p in parts]
        self.tensors += torch.stack(step)  # (2 + K,)

    def totals(self, steps: int) -> Tensor:
        """(3 + K,) float64 on the device: summed loss, units, `steps`, then each log's sum."""
        host = self.tensors.new_tensor([float(steps), *self.host.values()])  # (1 + K,)
        return torch.cat([self.tensors[:2], host[:1], self.tensors[2:] + host[1:]])

    def shown(self, steps: int, summed: set[str]) -> dict[str, str]:
        """The progress bar's figures so far (one host read): the loss per unit and each log
        (per unit when it is summed, else per step)."""
        loss_sum, units, _, *logs = self.totals(steps).tolist()
        shown = {"loss": f"{loss_sum / max(units, 1):.3f}"}
        for name, value in zip(self.names, logs, strict=True):
            shown[name] = f"{value / (max(units, 1) if name in summed else steps):.3f}"
        return shown


def merge_stats(partial: Mapping[str, Any] | None, stats: EpochStats) -> EpochStats:
    """Add the part of an epoch done before a resume (:meth:`EpochStats.partial`) to the part
    done after it."""
    if not partial:
        return stats
    sums = {k: partial.get(k, 0) + getattr(stats, k) for k in _PARTIAL}
    extra = dict(stats.extra)
    done = partial.get("steps", 0)
    for key, mean in (partial.get("extra") or {}).items():  # per-step means, weighted
        extra[key] = (mean * done + extra.get(key, 0.0) * stats.steps) / max(sums["steps"], 1)
    log_sums = dict(stats.log_sums)
    for key, total in (partial.get("log_sums") or {}).items():  # summed logs: per unit, exact
        log_sums[key] = total + log_sums.get(key, 0.0)
        extra[key] = log_sums[key] / sums["words"] if sums["words"] else float("nan")
    return EpochStats(
        loss=sums["loss_sum"] / sums["words"] if sums["words"] else float("nan"),
        interrupted=stats.interrupted,
        nonfinite_streak=stats.nonfinite_streak,
        extra=extra,
        log_sums=log_sums,
        **sums,
    )


def check_finite(model: nn.Module, epoch: int, run_dir: Path) -> None:
    """Refuse to go on (and to checkpoint) with non-finite weights."""
    tensors = [*model.named_parameters(), *model.named_buffers()]  # BatchNorm statistics too
    bad = [n for n, t in tensors if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CaptioningError(
            f"the model's weights became non-finite in epoch {epoch} ({', '.join(bad[:3])}); "
            f"nothing was saved, {run_dir / 'checkpoints' / 'last.pt'} is the last good model: "
            "lower optim.lr or set optim.grad_clip, then resume with trainer.resume"
        )
