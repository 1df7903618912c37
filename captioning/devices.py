"""Devices and numerics: which device to run on, torch's global switches, mixed precision.

Used by training (``trainer.device``, ``trainer.amp``, ...) and by inference (``--device``).
"""

from __future__ import annotations

import logging
import os

import torch

from captioning.errors import CaptioningError
from captioning.openmp import default_threads

__all__ = ["AMP_CHOICES", "autocast_dtype", "configure_torch", "resolve_device"]

AMP_CHOICES = ("auto", "bf16", "fp16", "none")
log = logging.getLogger(__name__)


def resolve_device(name: str = "auto", *, setting: str = "device") -> torch.device:
    """A device name as a ``torch.device``: ``auto`` is CUDA when available, else the CPU.

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...
        setting: how the user gave it (``trainer.device``, ``--device``), for the error message.

    Returns:
        The device.

    Raises:
        CaptioningError: not a device name, or a CUDA device on a machine without CUDA.
    """
    name = str(name).strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CaptioningError(
            f"{setting}={name!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CaptioningError(
                f"{setting}={name} but no CUDA GPU is available here "
                "(torch.cuda.is_available() is False); use cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CaptioningError(
                f"{setting}={name}: only {torch.cuda.device_count()} GPU(s) are visible"
            )
    return device


def configure_torch(
    device: torch.device,
    *,
    threads: int | None = None,
    deterministic: bool = False,
    cudnn_benchmark: bool = True,
    tf32: bool = True,
) -> None:
    """Set torch's process-wide switches for a run.

    Args:
        device: the training device (cuDNN and TF32 switches only matter on CUDA).
        threads: CPU threads for intra-op parallelism (None: one per core this process may
            use, :func:`captioning.openmp.default_threads`; with the passive OpenMP wait
            policy ``import captioning`` sets, that degrades gracefully beside other jobs).
        deterministic: ``torch.use_deterministic_algorithms`` (warn-only), and no cuDNN autotune.
        cudnn_benchmark: let cuDNN pick the fastest kernels for the shapes it sees.
        tf32: allow TF32 matmuls and convolutions for the float32 parts of the model.
    """
    torch.set_num_threads(int(threads) if threads else default_threads())
    policy = os.environ.get("OMP_WAIT_POLICY") or "unset: threads spin a while before they sleep"
    log.info("torch CPU threads: %d (OMP_WAIT_POLICY %s)", torch.get_num_threads(), policy)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_benchmark and not deterministic
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """``trainer.amp`` (auto | bf16 | fp16 | none) -> the autocast dtype (None: float32).

    ``auto``: bfloat16 on GPUs that support it, else float16 (with a GradScaler) on CUDA, and
    float32 on the CPU. ``bf16`` also runs on the CPU; ``fp16`` needs CUDA (the training loop
    itself runs float16 autocast with a CPU GradScaler too, which the tests use).

    Raises:
        CaptioningError: an unknown name, fp16 without CUDA, or bf16 on a GPU without bfloat16.
    """
    key = str(name).lower()
    if key in ("false", "null"):
        key = "none"
    if key not in AMP_CHOICES:
        raise CaptioningError(f"trainer.amp={name!r}: use one of {', '.join(AMP_CHOICES)}")
    if key == "none":
        return None
    if key == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if key == "fp16" and device.type != "cuda":
        raise CaptioningError("trainer.amp=fp16 needs a CUDA device; use bf16 or none on the CPU")
    if key == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise CaptioningError("this GPU has no bfloat16 support; use trainer.amp=fp16 (or auto)")
    return torch.bfloat16 if key == "bf16" else torch.float16
