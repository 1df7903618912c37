"""Training as a library: the :class:`Trainer` and the pieces it is made of.

    from captioning.training import Trainer
    Trainer.from_config(cfg, run_dir="outputs/run").fit()

One module per concern: ``config`` (typed settings), ``trainer`` (the run), ``loop`` (one
epoch), ``objectives`` (what a step minimises), ``state`` (checkpoints and exact resume),
``datasets`` (records, vocabulary, the feature-cache decision), ``finetune`` (encoder phases),
``optim`` (optimizer and schedules), ``scoring`` (validation and test), ``signals``.
"""

from captioning.training.config import RunConfig, parse_config
from captioning.training.loop import EpochStats, NonFiniteLossError, TrainLoop
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
