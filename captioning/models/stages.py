"""Which parts of a torchvision encoder learn: ``trainable`` and fine-tuning from a named stage.

:class:`StagedEncoder` is the base of the ResNet and backbone encoders: their parameters, in
module order, are a stem, then named stages (``layer1`` .. ``layer4`` for a ResNet), then
whatever follows (a final norm). ``fine_tune_from=k`` lets stages ``k..n`` and what follows
learn and freezes everything before stage ``k``; a frozen part stays in eval mode (BatchNorm
running statistics, no dropout), as :class:`~captioning.models.encoder.VGGEncoder` does.
"""

from __future__ import annotations

from torch import nn

from captioning.errors import CaptioningError

__all__ = ["StagedEncoder", "keep_frozen_parts_in_eval"]


def keep_frozen_parts_in_eval(encoder: nn.Module, mode: bool) -> None:
    """After ``encoder.train(mode)``: a wholly frozen encoder goes back to eval mode, and in a
    partly frozen one every BatchNorm whose parameters do not learn keeps its running statistics
    (eval mode). Shared by every encoder with ``trainable`` / ``fine_tune_from``."""
    if not mode:
        return
    if not any(p.requires_grad for p in encoder.parameters()):
        for child in encoder.children():
            child.train(False)
        return
    for module in encoder.modules():
        is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
        if is_bn and not any(p.requires_grad for p in module.parameters()):
            module.eval()


class StagedEncoder(nn.Module):
    """An encoder whose parameters fall into ordered, named stages (set :attr:`stage_names`).

    Attributes:
        stage_names: module-name prefixes of the stages, in forward order (1-based in
            ``fine_tune_from``).
    """

    stage_names: list[str]

    @property
    def num_blocks(self) -> int:
        """Number of stages ``fine_tune_from`` counts (4 for a ResNet)."""
        return len(self.stage_names)

    @property
    def frozen(self) -> bool:
        """``True`` when no parameter requires a gradient."""
        return not any(p.requires_grad for p in self.parameters())

    def set_trainable(self, trainable: bool, fine_tune_from: int | None = None) -> None:
        """Choose which parameters learn.

        * ``trainable=False``: everything is frozen and stays in eval mode (cacheable features).
        * ``trainable=True``: everything learns.
        * ``trainable=True, fine_tune_from=k``: stage ``k`` (1-based, :attr:`stage_names`) and
          everything after it learn; the stem and earlier stages are frozen, their BatchNorm
          layers in eval mode (the Show-Attend-Tell tutorial fine-tunes ResNet stages 2-4:
          ``fine_tune_from=2``).

        Args:
            trainable: Whether any parameter learns.
            fine_tune_from: First stage that learns (only with ``trainable=True``).

        Raises:
            CaptioningError: ``fine_tune_from`` is out of range or given without ``trainable``.
        """
        if fine_tune_from is not None and not trainable:
            raise CaptioningError(
                f"fine_tune_from={fine_tune_from} needs trainable=True; set both or neither"
            )
        if fine_tune_from is not None and not 1 <= fine_tune_from <= self.num_blocks:
            names = ", ".join(f"{i} = {n}" for i, n in enumerate(self.stage_names, 1))
            raise CaptioningError(
                f"fine_tune_from={fine_tune_from} is out of range; use a stage from 1 to "
                f"{self.num_blocks} ({names})"
            )
        self.requires_grad_(trainable)
        if fine_tune_from is not None:
            first = self.stage_names[fine_tune_from - 1] + "."
            for name, param in self.named_parameters():
                if name.startswith(first):
                    break
                param.requires_grad_(False)  # the stem and the stages before `first`
        self.train(self.training)

    def train(self, mode: bool = True) -> StagedEncoder:
        """Set train/eval mode, keeping frozen parts in eval mode (see :meth:`set_trainable`).

        Args:
            mode: ``True`` for training, ``False`` for evaluation.

        Returns:
            ``self``.
        """
        super().train(mode)
        keep_frozen_parts_in_eval(self, mode)
        return self
