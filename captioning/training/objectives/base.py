"""The objective interface (:class:`Objective`), its inputs and outputs, and the step module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from captioning.data.loader import CaptionBatch
from captioning.targets import instantiate

__all__ = [
    "OBJECTIVE_PREFIX",
    "Objective",
    "ObjectiveContext",
    "StepLoss",
    "TrainStep",
    "build_objective",
]

OBJECTIVE_PREFIX = "captioning.training.objectives."


@dataclass
class StepLoss:
    """What an objective returns for one batch.

    Attributes:
        total: scalar, the loss summed over the batch's units (e.g. target words).
        count: scalar, the number of units; the loop divides ``total`` by the global count.
        logs: scalars to report per epoch (averaged over steps), e.g. ``{"reward": ...}``.
    """

    total: Tensor
    count: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class ObjectiveContext:
    """What the trainer tells an objective before training starts.

    Attributes:
        vocab: the run's :class:`~captioning.vocab.Vocabulary`.
        train_records: the training split's image records (captions included).
        device: where training runs.
        decoding: the run's decoding settings (``max_len``, ...).
    """

    vocab: Any
    train_records: Sequence[Any] = ()
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    decoding: Mapping[str, Any] = field(default_factory=dict)


class Objective:
    """Base class of training objectives (see the package docstring)."""

    #: how the loss is reported: ``total / count`` is "per word", "per sample", ...
    unit: str = "word"
    #: the keys of ``StepLoss.logs`` (the same every step: epochs average them over ranks)
    log_names: tuple[str, ...] = ()

    def setup(self, context: ObjectiveContext) -> None:
        """Called once before training with the run's vocabulary, records and settings."""

    def start_epoch(self, epoch: int) -> None:
        """Called before each (1-based) epoch."""

    def loss(self, model: nn.Module, batch: CaptionBatch) -> StepLoss:
        """The summed loss of one batch (images or features already on the device)."""
        raise NotImplementedError


class TrainStep(nn.Module):
    """Model and objective as one module: what DDP and ``torch.compile`` wrap.

    Args:
        model: the CaptionModel (its parameters are this module's parameters).
        objective: the objective computing the loss.
    """

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: CaptionBatch) -> StepLoss:
        """The objective's :class:`StepLoss` for `batch`."""
        return self.objective.loss(self.model, batch)


def build_objective(node: Mapping[str, Any]) -> Objective:
    """The objective a config's ``objective`` node names (``_target_`` under this package)."""
    objective = instantiate(node, part="objective", prefix=OBJECTIVE_PREFIX)
    if not isinstance(objective, Objective):
        raise TypeError(f"{node['_target_']} is not a captioning.training.objectives.Objective")
    return objective
