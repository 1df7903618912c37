"""Scoring during training: validation after each epoch, and the final test of the best
checkpoint (each image decoded once, sharded over ranks under DDP)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from captioning.data.records import ImageRecord
from captioning.data.splits import load_split
from captioning.distributed import DistContext, barrier, is_distributed
from captioning.evaluation import evaluate_records
from captioning.grounding import grounding_scores, truth_for_split
from captioning.scoring import json_scores

if TYPE_CHECKING:
    from captioning.training.trainer import Trainer

__all__ = ["TEST_METRICS", "evaluate_split", "test_checkpoint"]

#: what the final test reports (validation runs only BLEU and CIDEr: METEOR needs Java and time)
TEST_METRICS = ("Bleu", "METEOR", "ROUGE_L", "CIDEr")


def evaluate_split(
    trainer: Trainer,
    split: str,
    records: Sequence[ImageRecord],
    decoding: Mapping[str, Any],
    *,
    metrics: tuple[str, ...] = ("Bleu", "CIDEr"),
) -> tuple[dict[str, float], dict[int, str]]:
    """Decode `records` once per image with the trainer's model (sharded over ranks) and score."""
    t, ctx = trainer.config.trainer, trainer.ctx
    return evaluate_records(
        trainer.model,
        records,
        trainer.vocab,
        device=trainer.device,
        decoding=decoding,
        metrics=metrics,
        batch_size=t.eval_batch_size,
        num_workers=t.num_workers,
        max_pixels=trainer.config.data.max_pixels,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )


def test_checkpoint(trainer: Trainer) -> dict[str, Any]:
    """Score the run's ``best.pt`` on the test split; write ``test_scores.json`` and
    ``test_results.json`` (rank 0)."""
    from captioning.inference import Captioner

    barrier()  # best.pt is on disk
    ctx = trainer.ctx
    if is_distributed():
        ctx = DistContext(dist.get_rank(), 0, dist.get_world_size())
    run_dir = trainer.run_dir
    captioner = Captioner.from_checkpoint(
        run_dir / "checkpoints" / "best.pt", device=str(trainer.device)
    )
    test = load_split(trainer.config.data, "test")
    t = trainer.config.trainer
    scores, predictions = evaluate_records(
        captioner.model,
        test,
        captioner.vocab,
        device=trainer.device,
        decoding=captioner.decoding,
        metrics=TEST_METRICS,
        batch_size=t.eval_batch_size,
        max_pixels=trainer.config.data.max_pixels,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    truth = truth_for_split(trainer.config.data, "test")
    if truth is not None:  # objects named right, CHAIR: what BLEU and CIDEr do not check
        num_images = scores.pop("num_images")
        scores.update(grounding_scores(predictions, truth).scores, num_images=num_images)
    if ctx.is_main:
        (run_dir / "test_scores.json").write_text(json_scores(scores))
        results = [{"image_id": i, "caption": c} for i, c in sorted(predictions.items())]
        (run_dir / "test_results.json").write_text(json.dumps(results) + "\n")
    paths = {r.image_id: r.path for r in test}
    examples = [(str(paths[i]), predictions[i]) for i in sorted(predictions)[:5]]
    return {"test": scores, "examples": examples}
