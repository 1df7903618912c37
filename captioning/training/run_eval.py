"""Scoring a run: its model on a split (each epoch's validation, :meth:`Trainer.evaluate`), and
its ``best.pt`` on the test split (:meth:`Trainer.test`), written into the run directory.

Both decode each image once with the run's decoding settings, sharded over the run's processes;
the scoring itself is :mod:`captioning.evaluation`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from captioning.data.records import ImageRecord
from captioning.data.regions import features_for
from captioning.distributed import DistContext, barrier, is_distributed
from captioning.evaluation import (
    TEST_METRICS,
    VALIDATION_SCORERS,
    Evaluation,
    evaluate_checkpoint,
    evaluate_split,
    write_results,
    write_scores,
)
from captioning.models.caption_model import CaptionModel
from captioning.training.config import RunConfig
from captioning.vocab import Vocabulary

__all__ = ["evaluate_model", "score_test_split"]


def evaluate_model(
    model: CaptionModel,
    vocab: Vocabulary,
    records: Sequence[ImageRecord],
    config: RunConfig,
    *,
    device: torch.device,
    ctx: DistContext,
    split: str,
    metrics: tuple[str, ...] = VALIDATION_SCORERS,
    loss: bool = False,
) -> Evaluation:
    """Decode `records` once per image with `model` (sharded over the ranks of `ctx`) and score
    them.

    Args:
        model: the run's model, on `device`.
        vocab: its vocabulary.
        records: the split's images and references.
        config: the run's settings (decoding, evaluation batch size, workers, image limits).
        device: where to decode.
        ctx: this process's place in the run.
        split: the split's name (for progress and messages).
        metrics: official scorers to run.
        loss: also the references' cross-entropy per word, as ``loss``.
    """
    t = config.trainer
    return evaluate_split(
        model,
        vocab,
        records,
        device=device,
        decoding=config.decoding,
        metrics=metrics,
        batch_size=t.eval_batch_size,
        num_workers=t.num_workers,
        max_pixels=config.data.max_pixels,
        rank=ctx.rank,
        world_size=ctx.world_size,
        split=split,
        loss=loss,
        loss_max_len=config.data.max_len,
        features=features_for(config.data, model.encoder),
    )


def score_test_split(
    run_dir: Path, config: RunConfig, *, device: torch.device, ctx: DistContext
) -> dict[str, Any]:
    """Score ``run_dir/checkpoints/best.pt`` on the test split with the official metrics (and
    the grounded ones where the data set has ground truth); rank 0 writes ``test_scores.json``
    and ``test_results.json`` into `run_dir`. Every rank must call it.

    Returns:
        ``test`` (scores) and ``examples`` (image path and caption of a few test images).
    """
    barrier()  # best.pt is on disk
    if is_distributed():  # (a trainer used after fit() shards as the run did)
        ctx = DistContext(dist.get_rank(), 0, dist.get_world_size())
    t = config.trainer
    evaluation = evaluate_checkpoint(
        run_dir / "checkpoints" / "best.pt",
        split="test",
        data=config.data,
        metrics=TEST_METRICS,
        device=str(device),
        batch_size=t.eval_batch_size,
        num_workers=t.num_workers,
        max_pixels=config.data.max_pixels,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    if ctx.is_main:
        write_scores(run_dir / "test_scores.json", evaluation.scores)
        write_results(run_dir / "test_results.json", evaluation.predictions)
    predictions, paths = evaluation.predictions, evaluation.images
    examples = [(str(paths[i]), predictions[i]) for i in sorted(predictions)[:5]]
    return {"test": evaluation.scores, "examples": examples}
