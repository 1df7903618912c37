"""The one evaluation path: a split's images, each decoded once -> scored -> results.

:func:`evaluate_split` is what the trainer's validation and test and ``tools/evaluate.py`` all
run: decode (:mod:`captioning.evaluation.decode`; sharded over ranks under DDP, the captions of
all shards merged), write the captions as a COCO results file when asked (before scoring, so a
scorer failure loses no decoding), score once on rank 0 (:func:`score_captions`: official
metrics, NLTK BLEU, grounded metrics) and hand every rank the scores.
:func:`evaluate_checkpoint` does the same for a trained checkpoint and the data it was trained on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from captioning.data.config import DataConfig
from captioning.data.images import MAX_PIXELS
from captioning.data.records import ImageRecord
from captioning.data.regions import RegionFeatures, features_for
from captioning.decoding import DecodingSettings
from captioning.distributed import broadcast_object, is_distributed
from captioning.errors import CaptioningError
from captioning.evaluation.decode import ReferenceLoss, decode_records
from captioning.evaluation.grounding import GroundingTruth, load_coco_truth, truth_for_split
from captioning.evaluation.metrics import TEST_METRICS, VALIDATION_SCORERS
from captioning.evaluation.results import write_results
from captioning.evaluation.scoring import ScoredCaptions, score_captions
from captioning.vocab import Vocabulary

__all__ = [
    "CheckpointSplit",
    "Evaluation",
    "checkpoint_split",
    "evaluate_checkpoint",
    "evaluate_split",
]

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """A split decoded once per image and scored.

    Attributes:
        scores: official metric names, ``nltk_Bleu_*``, the grounded scores (with ground truth)
            and ``num_images`` (on every rank).
        predictions: image id -> caption, every readable image of the split.
        references: image id -> reference captions, for the same images.
        images: image id -> image file, every image of the split.
        unreadable: images of the split that could not be read (left out).
        scored: the scoring details (notes, per-image scores, grounding), on rank 0 only.
        decoding: the decoding settings used.
        data: the data settings the split was read with (checkpoint evaluation).
    """

    scores: dict[str, float]
    predictions: dict[int, str]
    references: dict[int, list[str]]
    images: dict[int, Path] = field(default_factory=dict)
    unreadable: int = 0
    scored: ScoredCaptions | None = None
    decoding: DecodingSettings | None = None
    data: DataConfig | None = None


def evaluate_split(
    model: nn.Module,
    vocab: Vocabulary,
    records: Sequence[ImageRecord],
    *,
    device: torch.device,
    decoding: DecodingSettings | None = None,
    metrics: Sequence[str] = VALIDATION_SCORERS,
    grounding: GroundingTruth | None = None,
    spice: bool = False,
    per_image: bool = False,
    results: str | os.PathLike | None = None,
    batch_size: int = 100,
    num_workers: int = 0,
    max_pixels: int | None = MAX_PIXELS,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
    split: str = "",
    loss: bool = False,
    loss_max_len: int | None = None,
    features: RegionFeatures | None = None,
) -> Evaluation:
    """Decode every image of a split once and score the captions against all its references.

    Args:
        model: a CaptionModel.
        vocab: the vocabulary.
        records: the split's images and reference captions (all of them, on every rank).
        device: where to compute.
        decoding: the decoding settings (None: :class:`DecodingSettings` defaults).
        metrics: official scorers (default: validation's BLEU and CIDEr).
        grounding: the split's ground truth, for the grounded metrics; None: none.
        spice: also compute SPICE.
        per_image: keep per-image scores (for an HTML report).
        results: write the captions here as a COCO results file (rank 0), before scoring.
        batch_size: images decoded together.
        num_workers: image-loading worker processes.
        max_pixels: larger images are left out like unreadable ones.
        rank: this process's rank (DDP): it decodes ``records[rank::world_size]``.
        world_size: number of processes.
        progress: show a progress bar.
        split: the split's name, for messages.
        loss: also report ``loss``, the references' teacher-forced cross-entropy per word
            (:class:`~captioning.evaluation.decode.ReferenceLoss`, from the same encoder pass).
        loss_max_len: cut the references to this many words for the loss (``data.max_len``).
        features: the images' pre-extracted features (``encoder=precomputed``), read instead
            of the images.

    Returns:
        The :class:`Evaluation`.

    Raises:
        CaptioningError: no image of the split can be read (one line), or a scorer fails.
    """
    decoding = decoding or DecodingSettings()
    reference_loss = (
        ReferenceLoss.of_records(records, vocab, max_len=loss_max_len) if loss else None
    )
    predictions = decode_records(
        model,
        records,
        vocab,
        device=device,
        decoding=decoding,
        batch_size=batch_size,
        num_workers=num_workers,
        max_pixels=max_pixels,
        rank=rank,
        world_size=world_size,
        progress=progress,
        loss=reference_loss,
        features=features,
    )
    if not predictions:
        which = f"split {split!r}" if split else "the split"
        raise CaptioningError(f"none of the {len(records)} images of {which} can be read")
    references = {r.image_id: list(r.captions) for r in records if r.image_id in predictions}
    scored = None
    if not is_distributed() or dist.get_rank() == 0:
        if results is not None:
            write_results(results, predictions)
        scored = score_captions(
            references,
            predictions,
            metrics=metrics,
            spice=spice,
            per_image=per_image,
            grounding=grounding,
        )
        for note in scored.notes[1:]:  # (the first names the tokenizer)
            log.info("%s", note)
    scores = broadcast_object(scored.scores if scored is not None else None)
    if reference_loss is not None:
        scores["loss"] = reference_loss.per_word
    return Evaluation(
        scores=scores,
        predictions=predictions,
        references=references,
        images={r.image_id: r.path for r in records},
        unreadable=len(records) - len(predictions),
        scored=scored,
        decoding=decoding,
    )


@dataclass
class CheckpointSplit:
    """A trained checkpoint and a split of its data set, ready to evaluate
    (:func:`checkpoint_split`).

    Attributes:
        captioner: the trained model (:class:`captioning.Captioner`).
        records: the split's images and references.
        decoding: the checkpoint's decoding settings with the overrides applied.
        grounding: the ground truth for the grounded metrics, or None.
        data: the data settings the split is read with.
        split: the split's name.
    """

    captioner: Any
    records: list[ImageRecord]
    decoding: DecodingSettings
    grounding: GroundingTruth | None
    data: DataConfig
    split: str

    def evaluate(self, **kwargs: Any) -> Evaluation:
        """:func:`evaluate_split` of the checkpoint's model on the split (`kwargs`: its other
        keyword arguments)."""
        evaluation = evaluate_split(
            self.captioner.model,
            self.captioner.vocab,
            self.records,
            device=self.captioner.device,
            decoding=self.decoding,
            grounding=self.grounding,
            split=self.split,
            features=features_for(self.data, self.captioner.model.encoder),
            **{"metrics": TEST_METRICS, **kwargs},
        )
        evaluation.data = self.data
        return evaluation


def checkpoint_split(
    checkpoint: str | os.PathLike,
    *,
    split: str = "test",
    data: DataConfig | None = None,
    data_root: str | os.PathLike | None = None,
    decoding: Mapping[str, Any] | None = None,
    instances: str | os.PathLike | None = None,
    device: str = "auto",
) -> CheckpointSplit:
    """Load a trained checkpoint and the records of a split of its data set.

    The ground truth for the grounded metrics is the data set's own (shapes objects, or COCO
    instances from ``data.instances``), or the `instances` file given.

    Args:
        checkpoint: a checkpoint file or a run directory.
        split: a split of the data settings.
        data: the data settings (default: the ones stored in the checkpoint).
        data_root: where the data set is, when not where it was at training time.
        decoding: overrides of the checkpoint's decoding settings (``{"beam_size": 3}``).
        instances: a COCO instances file for CHAIR, instead of the data set's.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...

    Returns:
        The :class:`CheckpointSplit`.
    """
    from captioning.checkpoint import load_checkpoint
    from captioning.data.config import data_config
    from captioning.data.loader import prepare_data
    from captioning.data.splits import load_split
    from captioning.inference import Captioner

    ckpt = load_checkpoint(checkpoint)  # read once: the model and the data settings
    captioner = Captioner.from_checkpoint(ckpt, device=device, source=checkpoint)
    if data is None:
        stored = ckpt["config"].get("data")
        if not isinstance(stored, Mapping):
            raise CaptioningError(
                f"{checkpoint} records no data config; score its captions in results mode "
                "(--references ANN.json --results RES.json)"
            )
        data = data_config(stored, legacy=True)
    if data_root:
        data = dataclasses.replace(data, root=str(data_root))
    prepare_data(data, generate=False)  # never writes a data set where nobody asked for one
    return CheckpointSplit(
        captioner=captioner,
        records=load_split(data, split),
        decoding=captioner.decoding.replace(**(decoding or {})),
        grounding=load_coco_truth(instances) if instances else truth_for_split(data, split),
        data=data,
        split=split,
    )


def evaluate_checkpoint(checkpoint: str | os.PathLike, **kwargs: Any) -> Evaluation:
    """:func:`checkpoint_split` then its :meth:`~CheckpointSplit.evaluate`: a trained checkpoint
    decoded once per image on a split of its data set and scored (official metrics by default:
    :data:`~captioning.evaluation.metrics.TEST_METRICS`).

    Args:
        checkpoint: a checkpoint file or a run directory.
        **kwargs: the keyword arguments of :func:`checkpoint_split` (``split``, ``data``,
            ``data_root``, ``decoding``, ``instances``, ``device``) and of
            :func:`evaluate_split` (``metrics``, ``results``, ``batch_size``, ...).

    Returns:
        The :class:`Evaluation`, with ``data`` set.
    """
    names = ("split", "data", "data_root", "decoding", "instances", "device")
    loading = {k: kwargs.pop(k) for k in names if k in kwargs}
    return checkpoint_split(checkpoint, **loading).evaluate(**kwargs)
