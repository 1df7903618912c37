"""The objective interface (:class:`Objective`), its settings (:class:`ObjectiveSettings`), its
inputs and outputs, and the step module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from captioning.data.captions import TokenizedCaptions
from captioning.data.loader import CaptionBatch
from captioning.decoding.settings import DecodingSettings
from captioning.errors import CaptioningError
from captioning.settings import parse_settings, plain
from captioning.targets import BuilderSettings, check_arguments, instantiate, resolve_target

__all__ = [
    "OBJECTIVE_PREFIX",
    "Objective",
    "ObjectiveContext",
    "ObjectiveSettings",
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
        attention: whether the model's decoder attends (and so has the attention regulariser).
        train_tokens: ``train_records``' captions as the run tokenized them once (vocabulary,
            encoded captions), for an objective that needs their words; None: not given.
    """

    vocab: Any
    train_records: Sequence[Any] = ()
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    decoding: DecodingSettings = field(default_factory=DecodingSettings)
    attention: bool = False
    train_tokens: TokenizedCaptions | None = None


class Objective:
    """Base class of training objectives (see the package docstring)."""

    #: how the loss is reported: ``total / count`` is "per word", "per sample", ...
    unit: str = "word"
    #: the keys of ``StepLoss.logs`` (the same every step: epochs average them over ranks)
    log_names: tuple[str, ...] = ()
    #: those of ``log_names`` that are sums over the step's units, like ``StepLoss.total``: an
    #: epoch reports their sum over all its units divided by the units (exactly like the loss),
    #: the others are averaged over steps
    summed_logs: tuple[str, ...] = ()
    #: the settings dataclass its ``objective`` node fills (None: checked against ``__init__``);
    #: an objective with one is built as ``cls(settings)``
    settings_type: ClassVar[type | None] = None

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


@dataclass(frozen=True)
class ObjectiveSettings(BuilderSettings):
    """``objective``: the objective class a config names (``_target_`` under this package) and
    its settings, parsed into the class's :attr:`Objective.settings_type` (conf/objective/).

    Attributes:
        node: the node as plain data, exactly as the config gives it (:meth:`to_dict`).
        settings: the parsed settings (an instance of the class's ``settings_type``; None for
            an objective without one).
    """

    settings: Any = None

    part: ClassVar[str] = "objective"
    prefix: ClassVar[str] = OBJECTIVE_PREFIX

    @classmethod
    def from_config(cls, node: Any, key: str | None = None) -> ObjectiveSettings:
        """Check an ``objective`` node (one error line naming the key) and return it typed."""
        key = key or cls.part
        if not isinstance(node, Mapping):
            raise CaptioningError(f"{key} must be a mapping with a _target_, got {node!r}")
        node = plain(node)
        factory = resolve_target(node, part=key, prefix=cls.prefix)
        settings_type = getattr(factory, "settings_type", None)
        if settings_type is None:
            check_arguments(node, part=key, prefix=cls.prefix)
            return cls(node)
        arguments = {k: v for k, v in node.items() if not str(k).startswith("_")}
        return cls(node, parse_settings(settings_type, arguments, key))

    def build(self, **runtime: Any) -> Objective:
        """The objective (``cls(settings)``)."""
        if self.settings is None:
            objective = instantiate(self.node, part=self.part, prefix=self.prefix, **runtime)
        else:
            objective = resolve_target(self.node, part=self.part, prefix=self.prefix)(
                self.settings, **runtime
            )
        if not isinstance(objective, Objective):
            raise TypeError(f"{self.target} is not a captioning.training.objectives.Objective")
        return objective


def build_objective(node: ObjectiveSettings | Mapping[str, Any]) -> Objective:
    """The objective a config's ``objective`` node names (``_target_`` under this package).

    Args:
        node: the run's :class:`ObjectiveSettings`, or the plain node (checked here).

    Returns:
        The objective.
    """
    settings = node if isinstance(node, ObjectiveSettings) else ObjectiveSettings.from_config(node)
    return settings.build()
