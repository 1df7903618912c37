"""Self-critical training benchmark: its throughput next to cross-entropy's, and the reward's share.

Full training steps (forward, backward, clipping, Adam) of the shapes demo's model (``conf/``'s
vgg_tiny encoder at 64 px, learning, and LSTM 128/256 decoder) on the same preloaded batches of
16 shapes images (about 80 captions), in one process, interleaved so that all objectives see the
same machine load:

* cross-entropy (``objective=xe``): teacher forcing of every reference caption;
* self-critical with the greedy baseline and with the mean baseline, 5 samples per image (80
  sampled captions, as many rows as cross-entropy's captions), ``max_len`` 20.

The reward's share is the time spent scoring captions with CIDEr-D (the objective times its own
calls) over the whole step. The weights are untrained: their samples are longer (about 13
words, the last column) than a trained model's (about 10 on the shapes data), so sampling and
scoring cost a little more than in a real run. One torch thread, like ``bench_training`` (small
kernels on a shared CPU; see there).

``python -m benchmarks scst [--quick]``; ``run(quick)`` returns ``rows`` and ``markdown``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from captioning.data.coco import load_coco_captions
from captioning.data.datasets import CaptionDataset
from captioning.data.loader import build_train_loader
from captioning.data.shapes import generate_shapes
from captioning.data.transforms import eval_transform
from captioning.decoding import DecodingSettings
from captioning.models.caption_model import build_model
from captioning.training import TrainLoop
from captioning.training.objectives import (
    CrossEntropyObjective,
    ObjectiveContext,
    SelfCriticalObjective,
)
from captioning.training.optim import build_optimizer
from captioning.vocab import Vocabulary

CONF = Path(__file__).resolve().parents[1] / "conf"
BATCH = 16  # images per batch, as conf/base_trainer.yaml
MAX_LEN = 20  # conf/decoding/greedy.yaml


def _model_config() -> dict[str, Any]:
    """The demo's encoder and decoder nodes, read from conf/."""
    return {
        part: OmegaConf.to_container(OmegaConf.load(CONF / part / f"{name}.yaml"))
        for part, name in (("encoder", "vgg_tiny"), ("decoder", "lstm"))
    }


def _objectives() -> dict[str, Any]:
    return {
        "cross-entropy": CrossEntropyObjective(),
        "SCST, greedy baseline": SelfCriticalObjective(baseline="greedy", num_samples=5),
        "SCST, mean baseline": SelfCriticalObjective(baseline="mean", num_samples=5),
    }


def run(quick: bool) -> dict[str, Any]:
    """Time the objectives' steps; ``quick``: 2 batches, 1 repeat (a smoke run)."""
    n_batches, repeats = (2, 1) if quick else (6, 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            n = n_batches * BATCH
            root = generate_shapes(Path(tmp) / "shapes", train=n, val=0, test=0, seed=0)
            records = load_coco_captions(
                root / "annotations" / "captions_train.json", root / "images"
            )
            vocab = Vocabulary.build(c for r in records for c in r.captions)
            torch.manual_seed(0)
            model = build_model(_model_config(), vocab_size=len(vocab))
            transform = eval_transform(model.encoder.preprocess)
            loader = build_train_loader(CaptionDataset(records, vocab, transform), batch_size=BATCH)
            batches = list(loader)  # preloaded: image decoding is not what is measured
        context = ObjectiveContext(vocab, records, decoding=DecodingSettings(max_len=MAX_LEN))
        objectives = _objectives()
        for objective in objectives.values():
            objective.setup(context)
        optimizer = build_optimizer(model, lr=1e-5)
        seconds: dict[str, list[float]] = {name: [] for name in objectives}
        reward: dict[str, list[float]] = {name: [] for name in objectives}
        words: dict[str, float] = {}
        for _ in range(repeats + 1):  # the first round warms up
            for name, objective in objectives.items():
                loop = TrainLoop(
                    model, optimizer, device=torch.device("cpu"), objective=objective, grad_clip=5
                )
                objective.reward_seconds = 0.0
                start = time.perf_counter()
                stats = loop.run_epoch(batches)
                seconds[name].append(time.perf_counter() - start)
                words[name] = stats.extra.get("sample_len", float("nan"))
                reward[name].append(getattr(objective, "reward_seconds", 0.0))
    finally:
        torch.set_num_threads(threads)
    images = n_batches * BATCH
    captions = sum(b.captions.size(0) for b in batches)
    base = statistics.median(seconds["cross-entropy"][1:])
    rows = []
    for name in objectives:
        step = statistics.median(seconds[name][1:])
        pairs = zip(reward[name][1:], seconds[name][1:], strict=True)
        share = statistics.median(r / s for r, s in pairs)
        rows.append(
            {
                "objective": name,
                "images/s": round(images / step, 1),
                "step ms": round(1000 * step / n_batches, 1),
                "vs cross-entropy": round(base / step, 2),
                "reward share": round(share, 3) if name != "cross-entropy" else None,
                "sampled words": round(words[name], 1),
            }
        )
    lines = [
        f"{n_batches} batches of {BATCH} shapes images ({captions} reference captions; SCST: "
        f"5 samples per image, max_len {MAX_LEN}), demo model (vgg_tiny 64 px + LSTM 128/256), "
        "untrained, 1 thread, median of "
        f"{repeats}",
        "",
        "| objective | images/s | ms per step | throughput vs cross-entropy | reward share of "
        "the step | words per sample |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        share = "-" if r["reward share"] is None else f"{100 * r['reward share']:.1f} %"
        sampled = "-" if r["reward share"] is None else r["sampled words"]
        lines.append(
            f"| {r['objective']} | {r['images/s']} | {r['step ms']} | {r['vs cross-entropy']} | "
            f"{share} | {sampled} |"
        )
    return {"rows": rows, "markdown": "\n".join(lines) + "\n"}
