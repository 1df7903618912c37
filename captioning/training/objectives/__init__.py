"""Training objectives: what one training step minimises, behind one small interface.

An objective is a plain object (not a module: it has no parameters of its own) with

* ``setup(context)``: once, before training, with the run's vocabulary, training records, device
  and decoding settings (:class:`ObjectiveContext`);
* ``start_epoch(epoch)``: before each epoch (schedules such as scheduled sampling);
* ``loss(model, batch) -> StepLoss``: the step's loss *summed* over its units (target words for
  cross-entropy, sampled words for self-critical training), the number of those units, and
  per-step statistics to log.

Implementations: cross-entropy (``xe.py``, ``objective=xe``) and self-critical sequence training
(``scst.py``, ``objective=scst``).

The training loop divides the sum by the units of the whole (global, under DDP) batch, backs
it up, clips and steps; :class:`TrainStep` puts model and objective in one ``nn.Module`` so that
``DistributedDataParallel`` and ``torch.compile`` wrap the whole step. A new objective is a new
class here with a settings dataclass (its ``settings_type``, which the ``objective`` node
fills), chosen with ``objective=NAME`` (``conf/objective/NAME.yaml`` naming its ``_target_``),
or passed to :class:`~captioning.training.Trainer` from Python; the loop does not
change.
"""

from captioning.training.objectives.base import (
    OBJECTIVE_PREFIX,
    Objective,
    ObjectiveContext,
    ObjectiveSettings,
    StepLoss,
    TrainStep,
    build_objective,
)
from captioning.training.objectives.scst import (
    SelfCriticalObjective,
    SelfCriticalSettings,
    leave_one_out_baseline,
    sampled_lengths,
    sequence_logprobs,
)
from captioning.training.objectives.xe import (
    CrossEntropyObjective,
    CrossEntropySettings,
    ScheduledSampling,
    caption_cross_entropy,
    cross_entropy_parts,
    sampled_forward,
    sampling_probability,
)

__all__ = [
    "OBJECTIVE_PREFIX",
    "CrossEntropyObjective",
    "CrossEntropySettings",
    "Objective",
    "ObjectiveContext",
    "ObjectiveSettings",
    "ScheduledSampling",
    "SelfCriticalObjective",
    "SelfCriticalSettings",
    "StepLoss",
    "TrainStep",
    "build_objective",
    "caption_cross_entropy",
    "cross_entropy_parts",
    "leave_one_out_baseline",
    "sampled_forward",
    "sampled_lengths",
    "sampling_probability",
    "sequence_logprobs",
]
