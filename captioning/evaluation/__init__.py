"""Evaluation: a split's images, each decoded once -> scored -> written. One path for all.

The trainer's validation and test, ``tools/evaluate.py`` and the tests all run
:func:`evaluate_split` (or :func:`evaluate_checkpoint`, the same for a trained checkpoint)::

    evaluation = evaluate_checkpoint("outputs/demo", split="test", decoding={"beam_size": 3})
    evaluation.scores        # {"Bleu_4": ..., "CIDEr": ..., "CHAIR_i": ..., "num_images": 500}

What is where:

* ``decode.py``: captions, each image decoded once (sharded over ranks under DDP).
* ``metrics.py``: the official COCO scorers (pycocoevalcap) and NLTK's BLEU.
* ``grounding/``: grounded metrics: shapes objects named right, CHAIR.
* ``scoring.py``: :func:`score_captions`, the one place both kinds of scores are merged.
* ``run.py``: :func:`evaluate_split`, :func:`evaluate_checkpoint`: decode -> score.
* ``results.py``: reference, results and scores files, read and written.
* ``html.py``: the HTML page of a scored split; ``tables.py``: console tables.
"""

from captioning.evaluation.decode import decode_images, decode_records
from captioning.evaluation.metrics import (
    METRIC_KEYS,
    TEST_METRICS,
    VALIDATION_SCORERS,
    ScoreReport,
    coco_scores,
    evaluate_captions,
    nltk_bleu,
)
from captioning.evaluation.results import (
    image_files,
    json_scores,
    load_references,
    load_results,
    write_results,
    write_scores,
)
from captioning.evaluation.run import (
    CheckpointSplit,
    Evaluation,
    checkpoint_split,
    evaluate_checkpoint,
    evaluate_split,
)
from captioning.evaluation.scoring import ScoredCaptions, score_captions
from captioning.evaluation.tables import format_table

__all__ = [
    "METRIC_KEYS",
    "TEST_METRICS",
    "VALIDATION_SCORERS",
    "CheckpointSplit",
    "Evaluation",
    "ScoreReport",
    "ScoredCaptions",
    "checkpoint_split",
    "coco_scores",
    "decode_images",
    "decode_records",
    "evaluate_captions",
    "evaluate_checkpoint",
    "evaluate_split",
    "format_table",
    "image_files",
    "json_scores",
    "load_references",
    "load_results",
    "nltk_bleu",
    "score_captions",
    "write_results",
    "write_scores",
]
