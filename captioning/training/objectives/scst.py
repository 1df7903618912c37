"""Self-critical sequence training (SCST): REINFORCE on the CIDEr-D of the model's own captions.

Rennie et al. (CVPR 2017) fine-tune a cross-entropy model by sampling captions, scoring them
with CIDEr-D against the image's training references and pushing up the log-probability of the
captions that score better than a baseline, the model's own greedy caption (``baseline=greedy``).
Luo (2020, "A Better Variant of Self-Critical Sequence Training") draws K captions per image and
gives each one the mean reward of the other K - 1 as its baseline (``baseline=mean``): no greedy
decoding, and a better baseline. For K samples w^k of an image with rewards r^k and baselines
b^k, the loss is

    L = - sum_k (r^k - b^k) * sum_t log p(w^k_t | w^k_<t, image)

summed over the batch's images and divided by the number of sampled words (``<end>`` included,
padding after it masked), as ruotianluo's ImageCaptioning.pytorch does; the gradient is the
REINFORCE estimate of the expected reward's gradient, scaled by one over the words.

One step: each image is encoded once (with gradients when the encoder learns); K captions per
image are drawn with :func:`captioning.decoding.generate` (``sample=True``: temperature 1, the
global generator, so exact resume holds) under ``no_grad``; their rewards (and the greedy captions' with
``baseline=greedy``) are computed on the CPU (:class:`~captioning.rewards.SelfCriticalReward`:
CIDEr-D with `<end>`, as self-critical.pytorch computes it, document frequencies of the
training references, which it takes as the run tokenized them for the vocabulary:
``ObjectiveContext.train_tokens``, the same :func:`captioning.text.tokenize`); then the sampled
words are teacher-forced through the decoder's fused ``forward`` to get their log-probabilities
with gradients.

Host synchronisations (a GPU stall each; counted by a test): sampling reads one value per
generated word (how many rows go on: decoding ends when every row has ended, which only the host
can decide), and so does the greedy baseline; the step then copies the caption-to-image index
to the host (1), the sampled and greedy captions for the reward, computed on the CPU (1 each),
and the sampled lengths, which packing needs on the host (1). The logs (rewards are host numbers
already, the sample length stays on the device) add none; the training loop adds its one.

Dropout: by default the objective puts the decoder in eval mode itself (whatever mode the
training loop left it in) for the whole step (sampling, the greedy
baseline and the log-probabilities), so the log-probabilities with gradients are exactly those of
the distribution the captions were drawn from (and of the model that is tested), and the gradient
is an unbiased REINFORCE estimate. ``dropout=true`` leaves the decoder in train mode for the
samples and the log-probabilities (as ruotianluo's code, though the two passes draw independent
dropout masks, so the gradient is slightly off-policy); the greedy baseline is always decoded in
eval mode. The decoder's modes are restored after the step. The encoder runs in the mode the
training loop set, as in cross-entropy training.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from captioning.contracts import CaptionDecoder, EncoderOutput
from captioning.data.loader import CaptionBatch
from captioning.decoding import DecodingSettings, generate
from captioning.errors import CaptioningError
from captioning.rewards import SelfCriticalReward
from captioning.settings import parse_settings
from captioning.training.objectives.base import Objective, ObjectiveContext, StepLoss
from captioning.training.objectives.xe import (
    CrossEntropyObjective,
    CrossEntropySettings,
    ScheduledSampling,
)

__all__ = [
    "SelfCriticalObjective",
    "SelfCriticalSettings",
    "leave_one_out_baseline",
    "sampled_lengths",
    "sequence_logprobs",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelfCriticalSettings:
    """``objective=scst``: the settings of :class:`SelfCriticalObjective`
    (conf/objective/scst.yaml).

    Attributes:
        baseline: ``"mean"`` (Luo 2020: the mean reward of the image's other samples; better
            on COCO in his model zoo and on the shapes data here) or ``"greedy"`` (Rennie et
            al. 2017: the reward of the greedy caption).
        num_samples: captions sampled per image (K; >= 2 with ``mean``).
        cider_weight: weight of CIDEr-D in the reward.
        bleu_weight: weight of BLEU-4 in the reward (not both 0).
        max_len: most words per sampled caption, `<end>` included (None: ``decoding.max_len``).
        start_epoch: first epoch (1-based) of self-critical training, cross-entropy before it
            (ruotianluo's ``self_critical_after``); None: from the first epoch.
        dropout: keep the decoder's dropout on for the samples and their log-probabilities
            (False: eval mode for the whole step).
        label_smoothing: cross-entropy label smoothing of the epochs before `start_epoch`.
        scheduled_sampling: their scheduled-sampling ramp (as ``objective=xe``).
    """

    baseline: Literal["greedy", "mean"] = "mean"
    num_samples: int = field(default=5, metadata={"ge": 1})
    cider_weight: float = field(default=1.0, metadata={"ge": 0.0})
    bleu_weight: float = field(default=0.0, metadata={"ge": 0.0})
    max_len: int | None = field(default=None, metadata={"ge": 1})
    start_epoch: int | None = field(default=None, metadata={"ge": 1})
    dropout: bool = False
    label_smoothing: float = field(default=0.0, metadata={"ge": 0.0, "lt": 1.0})
    scheduled_sampling: ScheduledSampling = field(default_factory=ScheduledSampling)

    def __post_init__(self) -> None:
        if self.baseline == "mean" and self.num_samples < 2:
            raise CaptioningError(
                f"objective.num_samples={self.num_samples}: must be >= 2 (the mean baseline "
                "averages the other samples)"
            )
        if not self.cider_weight and not self.bleu_weight:
            raise CaptioningError("objective.cider_weight and objective.bleu_weight are both 0")


def sampled_lengths(sequences: Tensor, *, eos_id: int = 2, pad_id: int = 0) -> Tensor:
    """Tokens of each decoded row up to and including its first `<end>` (or `<pad>`).

    A row without either has all T tokens (it was cut at ``max_len``). The reward reads a row up
    to the same token, so the words after it (decoding pads them) never count.

    Args:
        sequences: (R, T) ids after `<start>` (decoded sequences, one row per caption).
        eos_id: `<end>`'s id.
        pad_id: `<pad>`'s id.

    Returns:
        (R,) long lengths in 1..T.
    """
    stops = (sequences == eos_id) | (sequences == pad_id)  # (R, T)
    first = stops.int().argmax(dim=1)  # (R,) first stop, 0 when none
    full = torch.full_like(first, sequences.size(1))
    return torch.where(stops.any(dim=1), first + 1, full)


def sequence_logprobs(
    decoder: CaptionDecoder,
    features: EncoderOutput,
    sequences: Tensor,
    lengths: Tensor,
    *,
    bos_id: int = 1,
) -> Tensor:
    """Log-probabilities of given word sequences, with gradients, by teacher forcing.

    Args:
        decoder: any decoder with the step contract (its fused ``forward`` is used).
        features: encoder output with one row per sequence (R rows).
        sequences: (R, T) ids after `<start>` (e.g. sampled captions).
        lengths: (R,) tokens that count per row (:func:`sampled_lengths`); positions at or after
            a row's length get 0.

    Returns:
        (R, T) float32 log p(w_t | w_<t, image), zero at masked positions.
    """
    r, t = sequences.shape
    start = sequences.new_full((r, 1), bos_id)
    inputs = torch.cat([start, sequences[:, :-1]], dim=1)  # (R, T) <start> w1 .. w_{T-1}
    logits = decoder(features, inputs, lengths.cpu())  # (R, T, V)
    with torch.autocast(logits.device.type, enabled=False):  # log-softmax in float32
        logprobs = logits.float().log_softmax(dim=-1)  # (R, T, V)
        chosen = logprobs.gather(2, sequences.unsqueeze(2)).squeeze(2)  # (R, T)
    mask = torch.arange(t, device=sequences.device) < lengths.to(sequences.device).unsqueeze(1)
    return chosen * mask  # (R, T)


def leave_one_out_baseline(rewards: np.ndarray) -> np.ndarray:
    """Luo's baseline: for each of K samples of an image, the mean reward of the other K - 1.

    Args:
        rewards: (B, K) rewards, K >= 2.

    Returns:
        (B, K) baselines.
    """
    k = rewards.shape[1]
    return (rewards.sum(axis=1, keepdims=True) - rewards) / (k - 1)


def _image_ids(batch: CaptionBatch, n: int) -> list[int]:
    """The image id of each of the batch's N image rows (from its captions' ids)."""
    ids = torch.full((n,), -1, dtype=torch.long)
    ids[batch.image_index.cpu()] = batch.image_ids.cpu().long()
    return ids.tolist()


def _references(context: ObjectiveContext) -> dict[Any, Any]:
    """The training references by image id: the run's tokens of them where given (the reward's
    tokenizer, :func:`captioning.text.tokenize`, gives the same), else the raw captions."""
    records, tokens = context.train_records, context.train_tokens
    if tokens is None:
        return {r.image_id: r.captions for r in records if r.captions}
    if not tokens.matches(records):
        raise ValueError("train_tokens were made from other records than train_records")
    return {
        r.image_id: refs for r, refs in zip(records, tokens.by_record(), strict=True) if r.captions
    }


class SelfCriticalObjective(Objective):
    """Self-critical sequence training (``objective=scst``); see the module docstring.

    Args:
        settings: the parsed :class:`SelfCriticalSettings`; or none, and
        **options: its fields as keyword arguments (``baseline="greedy"``, ``num_samples=5``,
            ...), checked (one error line per mistake).
    """

    unit = "word"
    #: mean reward of the samples, mean baseline, mean words per sample (before `<end>`), and the
    #: fraction of samples whose reward beats their baseline; NaN in cross-entropy epochs
    log_names = ("reward", "baseline", "sample_len", "better")
    settings_type = SelfCriticalSettings

    def __init__(self, settings: SelfCriticalSettings | None = None, /, **options: Any) -> None:
        if settings is None:
            settings = parse_settings(SelfCriticalSettings, options, "objective")
        elif options:
            raise CaptioningError("SelfCriticalObjective takes settings or options, not both")
        self.settings = settings
        self.baseline, self.num_samples = settings.baseline, settings.num_samples
        self.weights = (settings.cider_weight, settings.bleu_weight)
        self.max_len, self.scst_from = settings.max_len, settings.start_epoch
        self.dropout = settings.dropout
        self.xe = CrossEntropyObjective(
            CrossEntropySettings(settings.label_smoothing, settings.scheduled_sampling)
        )
        self.active = settings.start_epoch is None
        self.reward: SelfCriticalReward | None = None
        self.ids = {"bos_id": 1, "eos_id": 2, "pad_id": 0}
        self.reward_seconds = 0.0  # time spent scoring captions (the benchmark reads it)

    def setup(self, context: ObjectiveContext) -> None:
        """Build the reward from the training references; take the ids and ``max_len``."""
        self.xe.setup(context)
        vocab = context.vocab
        self.ids = {"bos_id": vocab.bos_id, "eos_id": vocab.eos_id, "pad_id": vocab.pad_id}
        if self.max_len is None:
            self.max_len = context.decoding.max_len
        self.sampling = DecodingSettings(
            max_len=self.max_len, sample=True, num_samples=self.num_samples
        ).checked()
        self.greedy = DecodingSettings(max_len=self.max_len).checked()
        start = time.perf_counter()
        references = _references(context)
        self.reward = SelfCriticalReward(
            references, vocab=vocab, cider_weight=self.weights[0], bleu_weight=self.weights[1]
        )
        log.info(
            "self-critical training: %s baseline, %d samples per image, reward %s (%d training "
            "images, %.1f s)",
            self.baseline,
            self.num_samples,
            " + ".join(
                f"{w:g} x {name}"
                for w, name in zip(self.weights, ("CIDEr-D", "BLEU-4"), strict=True)
                if w
            ),
            len(references),
            time.perf_counter() - start,
        )

    def start_epoch(self, epoch: int) -> None:
        """Self-critical from ``start_epoch`` on; cross-entropy (with its schedules) before."""
        self.active = self.scst_from is None or epoch >= self.scst_from
        self.xe.start_epoch(epoch)

    def loss(self, model: nn.Module, batch: CaptionBatch) -> StepLoss:
        """The summed policy-gradient loss of the batch's sampled words (see the module doc)."""
        if not self.active:
            out = self.xe.loss(model, batch)
            nan = out.total.new_tensor(float("nan")).detach()
            return StepLoss(out.total, out.count, dict.fromkeys(self.log_names, nan))
        if self.reward is None:
            raise CaptioningError("SelfCriticalObjective.setup() was not called before loss()")
        features = batch.features if batch.features is not None else model.encode(batch.images)
        n, k, decoder = features.vector.size(0), self.num_samples, model.decoder
        image_ids = _image_ids(batch, n)
        modes = [(m, m.training) for m in decoder.modules()]
        try:
            decoder.train(self.dropout)
            with torch.no_grad():
                drawn = generate(
                    decoder, features, self.sampling, **self.ids
                ).sequences  # (N, K, T)
            rewards = self._score(drawn, image_ids)  # (N, K)
            if self.baseline == "mean":
                baseline = leave_one_out_baseline(rewards)
            else:
                decoder.eval()
                best = generate(decoder, features, self.greedy, **self.ids).best  # (N, T)
                baseline = np.repeat(self._score(best, image_ids)[:, None], k, axis=1)  # (N, K)
                decoder.train(self.dropout)
            seqs = drawn.flatten(0, 1)  # (N * K, T)
            lengths = sampled_lengths(seqs, eos_id=self.ids["eos_id"], pad_id=self.ids["pad_id"])
            rows = torch.arange(n, device=seqs.device).repeat_interleave(k)  # (N * K,)
            logprobs = sequence_logprobs(
                decoder, features.select(rows), seqs, lengths, bos_id=self.ids["bos_id"]
            )  # (N * K, T)
        finally:
            for module, training in modes:
                module.training = training
        advantage = torch.from_numpy((rewards - baseline).reshape(-1)).to(logprobs)  # (N * K,)
        total = -(advantage * logprobs.sum(dim=1)).sum()
        stopped = ((seqs == self.ids["eos_id"]) | (seqs == self.ids["pad_id"])).any(dim=1)
        logs = {
            "reward": float(rewards.mean()),
            "baseline": float(baseline.mean()),
            "sample_len": (lengths - stopped.long()).float().mean(),  # stays on the device
            "better": float((rewards > baseline).mean()),
        }
        return StepLoss(total, lengths.sum(), {key: torch.as_tensor(v) for key, v in logs.items()})

    def _score(self, sequences: Tensor, image_ids: list[int]) -> np.ndarray:
        """Rewards of (N, T) or (N, K, T) captions of the N images (timed)."""
        start = time.perf_counter()
        scores = self.reward.score_ids(sequences.cpu(), image_ids)
        self.reward_seconds += time.perf_counter() - start
        return scores
