"""Training as a library: the :class:`Trainer` and the pieces it is made of.

    from captioning.training import Trainer
    Trainer.from_config(cfg, run_dir="outputs/run").fit()

One module per concern: ``config`` (typed settings), ``trainer`` (the run), ``loop`` (one
epoch), ``epoch_stats`` (what an epoch did, finiteness checks), ``objectives`` (what a step
minimises), ``state`` (run state in checkpoints), ``resume`` (the checkpoint to resume and its
checks), ``run_data`` (records, vocabulary, the feature-cache decision, the training loader),
``run_log`` (metrics.csv, TensorBoard and the epoch line), ``warm_start``, ``finetune``
(encoder phases), ``optim`` (optimizer and schedules), ``run_eval`` (validation and test
scoring), ``setup`` (what a run builds first), ``signals`` (interrupts).
"""

from captioning.training.config import RunConfig, parse_config
from captioning.training.epoch_stats import EpochStats, NonFiniteLossError
from captioning.training.loop import TrainLoop
from captioning.training.objectives import CrossEntropyObjective, Objective, StepLoss
from captioning.training.trainer import Trainer

__all__ = [
    "CrossEntropyObjective",
    "EpochStats",
    "NonFiniteLossError",
    "Objective",
    "RunConfig",
    "StepLoss",
    "TrainLoop",
    "Trainer",
    "parse_config",
]
