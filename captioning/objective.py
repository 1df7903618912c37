"""What one training step computes, as a module: the summed caption loss of a batch.

:class:`CaptionObjective` wraps a CaptionModel so that everything a step computes runs inside one
``forward`` (what ``DistributedDataParallel`` and ``torch.compile`` wrap): encoding (or taking
cached features), teacher forcing or scheduled sampling, cross-entropy with label smoothing and
the attention decoders' regulariser. It returns the loss *summed* over real target words and
their count, so the training loop can divide by the word count of the whole (global) batch.

Scheduled sampling runs the decoder one step at a time over the step contract
(``init_state`` / ``step``), so it works with every decoder; with probability 0 the fused
teacher-forced pass is used instead (same function, one kernel over time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captioning.models.encoder import EncoderOutput

__all__ = ["CaptionObjective", "sampled_forward"]


def sampled_forward(
    decoder: nn.Module,
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


class CaptionObjective(nn.Module):
    """Summed training loss of a CaptionModel on a batch of images (or cached features).

    Args:
        model: the CaptionModel (its parameters are this module's parameters).
        pad_id: `<pad>` id, ignored by the loss.
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(self, model: nn.Module, *, pad_id: int = 0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.pad_id = pad_id
        self.label_smoothing = float(label_smoothing)

    def forward(
        self,
        images: Tensor | EncoderOutput,
        captions: Tensor,
        lengths: Tensor,
        image_index: Tensor,
        sample_prob: float = 0.0,
    ) -> tuple[Tensor, Tensor]:
        """Loss of one batch.

        Args:
            images: (N, 3, H, W) images, or their precomputed EncoderOutput (N rows).
            captions: (B, T + 1) `<start> w1 ... wn <end>`, right-padded.
            lengths: (B,) caption lengths, specials included (on the CPU).
            image_index: (B,) image row of each caption.
            sample_prob: scheduled-sampling probability (0: plain teacher forcing).

        Returns:
            (loss summed over the batch's real target words, number of those words). The sum
            is ``cross-entropy + attention_penalty * words`` for attention decoders, so dividing
            by the word count gives the usual mean loss plus the penalty.
        """
        inputs, targets = captions[:, :-1], captions[:, 1:]  # (B, T) each
        steps = lengths - 1  # input words per caption
        decoder = self.model.decoder
        attention = bool(getattr(decoder, "has_attention", False))
        alphas = None
        if sample_prob > 0:
            features = images if isinstance(images, EncoderOutput) else self.model.encode(images)
            features = features.select(image_index)  # (B, ...) one row per caption
            logits, alphas = sampled_forward(
                decoder, features, inputs, sample_prob, return_alphas=attention
            )
        elif attention:
            # attention decoders also return alpha (B, T, L) for their regulariser
            logits, alphas = self.model(images, inputs, steps, image_index, return_alphas=True)
        else:
            logits = self.model(images, inputs, steps, image_index)  # (B, T, V)
        with torch.autocast(logits.device.type, enabled=False):  # the loss in float32
            words = (targets != self.pad_id).sum()
            loss = F.cross_entropy(
                logits.float().flatten(0, 1),
                targets.flatten(),  # (B*T, V)
                ignore_index=self.pad_id,
                reduction="sum",
                label_smoothing=self.label_smoothing,
            )
            if alphas is not None:
                penalty = decoder.attention_penalty(alphas.float(), steps.to(logits.device))
                loss = loss + penalty * words
        return loss, words
