"""Cross-entropy (maximum likelihood) training: teacher forcing, label smoothing, scheduled
sampling, and the attention decoders' doubly stochastic regulariser.

Scheduled sampling runs the decoder one step at a time over the step contract
(``init_state`` / ``step``), so it works with every decoder; with probability 0 the fused
teacher-forced pass is used instead (same function, one kernel over time).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captioning.contracts import CaptionDecoder, EncoderOutput
from captioning.data.loader import CaptionBatch
from captioning.errors import CaptioningError
from captioning.settings import parse_settings
from captioning.training.objectives.base import Objective, ObjectiveContext, StepLoss

__all__ = [
    "CrossEntropyObjective",
    "CrossEntropySettings",
    "ScheduledSampling",
    "caption_cross_entropy",
    "cross_entropy_parts",
    "sampled_forward",
    "sampling_probability",
]


@dataclass(frozen=True)
class ScheduledSampling:
    """``objective.scheduled_sampling``: the ramp of :func:`sampling_probability` (whose
    arguments these are); ``start_epoch: null`` is off."""

    start_epoch: int | None = None
    increase_every: int = 5
    increase_prob: float = field(default=0.05, metadata={"ge": 0.0, "le": 1.0})
    max_prob: float = field(default=0.25, metadata={"ge": 0.0, "le": 1.0})


@dataclass(frozen=True)
class CrossEntropySettings:
    """``objective=xe``: the settings of :class:`CrossEntropyObjective` (conf/objective/xe.yaml).

    Attributes:
        label_smoothing: cross-entropy label smoothing (0: none), in [0, 1).
        scheduled_sampling: the scheduled-sampling ramp.
    """

    label_smoothing: float = field(default=0.0, metadata={"ge": 0.0, "lt": 1.0})
    scheduled_sampling: ScheduledSampling = field(default_factory=ScheduledSampling)


def sampling_probability(
    epoch: int,
    *,
    start_epoch: int | None = None,
    increase_every: int = 5,
    increase_prob: float = 0.05,
    max_prob: float = 0.25,
) -> float:
    """Scheduled sampling (Bengio et al. 2015): chance of feeding the model's own previous word.

    Off before `start_epoch` (1-based; None: never); from then on
    ``min(max_prob, increase_prob * (1 + (epoch - start_epoch) // increase_every))``, i.e. it
    rises by `increase_prob` every `increase_every` epochs (ruotianluo's
    ``scheduled_sampling_*`` options, whose defaults these are).

    Args:
        epoch: the epoch about to run (1-based).
        start_epoch: first epoch with scheduled sampling.
        increase_every: epochs between increases.
        increase_prob: increase per step of the ramp.
        max_prob: the ceiling.

    Returns:
        The probability for this epoch.
    """
    if start_epoch is None or epoch < int(start_epoch):
        return 0.0
    rises = 1 + (epoch - int(start_epoch)) // max(int(increase_every), 1)
    return float(min(float(max_prob), float(increase_prob) * rises))


def sampled_forward(
    decoder: CaptionDecoder,
    features: EncoderOutput,
    inputs: Tensor,
    sample_prob: float,
    *,
    return_alphas: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Teacher forcing with scheduled sampling, one decoder step per word.

    At step 0 every row gets ``inputs[:, 0]`` (`<start>`); at each later step, each row
    independently feeds, with probability `sample_prob`, a word sampled from the model's own
    previous output distribution (detached) instead of the reference word ``inputs[:, t]``.
    With ``sample_prob=0`` this is teacher forcing (the decoder's fused ``forward``, stepwise).

    Args:
        decoder: any decoder with the step contract.
        features: encoder output, one row per caption (B rows).
        inputs: (B, T) reference input words `<start> w1 ... wn`, right-padded.
        sample_prob: probability of feeding the model's own word.
        return_alphas: also return the attention weights of each step (``extras["alpha"]``).

    Returns:
        log-probabilities (B, T, V) (cross-entropy treats them like logits), and alphas
        (B, T, L) or None.
    """
    b, t_max = inputs.shape
    state = decoder.init_state(features)
    tokens = inputs[:, 0]
    outputs, alphas = [], []
    for t in range(t_max):
        if t > 0:
            tokens = inputs[:, t]
            if sample_prob > 0:
                previous = outputs[-1].detach().float().exp()  # (B, V) probabilities
                sampled = torch.multinomial(previous, 1).squeeze(1)  # (B,)
                own = torch.rand(b, device=inputs.device) < sample_prob  # (B,)
                tokens = torch.where(own, sampled, tokens)
        logprobs, state, extras = decoder.step(tokens, state, features)  # (B, V)
        outputs.append(logprobs)
        if return_alphas:
            alphas.append(extras["alpha"])  # (B, L)
    logprobs = torch.stack(outputs, dim=1)  # (B, T, V)
    return logprobs, (torch.stack(alphas, dim=1) if return_alphas else None)  # (B, T, L)


def caption_cross_entropy(
    model: nn.Module,
    images: Tensor | EncoderOutput,
    captions: Tensor,
    lengths: Tensor,
    image_index: Tensor,
    *,
    pad_id: int = 0,
    label_smoothing: float = 0.0,
    sample_prob: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy of a CaptionModel on a batch of images (or cached features).

    Args:
        model: the CaptionModel.
        images: (N, 3, H, W) images, or their precomputed EncoderOutput (N rows).
        captions: (B, T + 1) `<start> w1 ... wn <end>`, right-padded.
        lengths: (B,) caption lengths, specials included (on the CPU).
        image_index: (B,) image row of each caption.
        pad_id: `<pad>` id, ignored by the loss.
        label_smoothing: cross-entropy label smoothing.
        sample_prob: scheduled-sampling probability (0: plain teacher forcing).

    Returns:
        (loss summed over the batch's real target words, number of those words). For attention
        decoders the sum includes the doubly stochastic regulariser as the decoder's
        ``alpha_c_per`` says (the paper's: lambda times each caption's penalty).
    """
    xe, penalty, words = cross_entropy_parts(
        model,
        images,
        captions,
        lengths,
        image_index,
        pad_id=pad_id,
        label_smoothing=label_smoothing,
        sample_prob=sample_prob,
    )
    return (xe if penalty is None else xe + penalty), words


def cross_entropy_parts(
    model: nn.Module,
    images: Tensor | EncoderOutput,
    captions: Tensor,
    lengths: Tensor,
    image_index: Tensor,
    *,
    pad_id: int = 0,
    label_smoothing: float = 0.0,
    sample_prob: float = 0.0,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """:func:`caption_cross_entropy` in its parts: the summed cross-entropy of the target words,
    the summed attention regulariser (None for decoders without attention) and the word count.
    Arguments as :func:`caption_cross_entropy`."""
    inputs, targets = captions[:, :-1], captions[:, 1:]  # (B, T) each
    steps = lengths - 1  # input words per caption
    decoder = model.decoder
    attention = bool(getattr(decoder, "has_attention", False))
    alphas = mask = None
    if sample_prob > 0:
        features = images if isinstance(images, EncoderOutput) else model.encode(images)
        features = features.select(image_index)  # (B, ...) one row per caption
        logits, alphas = sampled_forward(
            decoder, features, inputs, sample_prob, return_alphas=attention
        )
        mask = features.mask  # (B, L) real regions, or None
    elif attention:
        # attention decoders also return alpha (B, T, L) for their regulariser, which counts
        # the real regions of each caption's image only (mask (B, L)). Images go through the
        # model's own forward (under DDP the encoder must run inside it); only features read
        # from files (pre-extracted regions) have a mask: an image encoder's grid has none
        logits, alphas = model(images, inputs, steps, image_index, return_alphas=True)
        if isinstance(images, EncoderOutput) and images.mask is not None:
            mask = images.mask.index_select(0, image_index.to(images.mask.device))
    else:
        logits = model(images, inputs, steps, image_index)  # (B, T, V)
    penalty = None
    with torch.autocast(logits.device.type, enabled=False):  # the loss in float32
        words = (targets != pad_id).sum()
        xe = F.cross_entropy(
            logits.float().flatten(0, 1),  # (B*T, V)
            targets.flatten(),
            ignore_index=pad_id,
            reduction="sum",
            label_smoothing=label_smoothing,
        )
        if alphas is not None:
            penalty = decoder.attention_penalty(alphas.float(), steps.to(logits.device), mask)
    return xe, penalty, words


class CrossEntropyObjective(Objective):
    """Maximum likelihood of the reference captions (``objective=xe``, the default).

    Args:
        settings: the parsed :class:`CrossEntropySettings`; or none, and
        **options: its fields as keyword arguments (``label_smoothing=0.1``,
            ``scheduled_sampling={"start_epoch": 3}``), checked (one error line per mistake).
    """

    settings_type = CrossEntropySettings
    #: with an attention decoder: the cross-entropy and the attention regulariser, each summed
    #: over the target words (the epoch divides them by its words: ``loss = xe +
    #: attention_penalty``); none otherwise (the loss is the cross-entropy)
    log_names: tuple[str, ...] = ()
    summed_logs: tuple[str, ...] = ()

    def __init__(self, settings: CrossEntropySettings | None = None, /, **options: Any) -> None:
        if settings is None:
            settings = parse_settings(CrossEntropySettings, options, "objective")
        elif options:
            raise CaptioningError("CrossEntropyObjective takes settings or options, not both")
        self.settings = settings
        self.label_smoothing = settings.label_smoothing
        self.ramp = dataclasses.asdict(settings.scheduled_sampling)
        self.pad_id = 0
        self.sample_prob = 0.0

    def setup(self, context: ObjectiveContext) -> None:
        """Take `<pad>`'s id from the vocabulary; log the attention regulariser apart."""
        self.pad_id = context.vocab.pad_id
        parts = ("xe", "attention_penalty") if context.attention else ()
        self.log_names = self.summed_logs = parts

    def start_epoch(self, epoch: int) -> None:
        """Set this epoch's scheduled-sampling probability."""
        self.sample_prob = sampling_probability(epoch, **self.ramp)

    def loss(self, model: nn.Module, batch: CaptionBatch) -> StepLoss:
        """Summed cross-entropy over the batch's target words (see :func:`caption_cross_entropy`)."""
        images = batch.features if batch.features is not None else batch.images
        xe, penalty, words = cross_entropy_parts(
            model,
            images,
            batch.captions,
            batch.lengths,
            batch.image_index,
            pad_id=self.pad_id,
            label_smoothing=self.label_smoothing,
            sample_prob=self.sample_prob,
        )
        if penalty is None:
            return StepLoss(xe, words)
        logs = {"xe": xe.detach(), "attention_penalty": penalty.detach()} if self.log_names else {}
        return StepLoss(xe + penalty, words, logs)
