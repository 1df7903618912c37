"""Multi-process (DDP) plumbing: process-group setup from ``torchrun``'s environment and the few
collectives the training loop needs. Every helper is a no-op in a single process.

``torchrun --nproc_per_node=G [--nnodes=N ...] tools/train.py trainer.distributed=true ...`` sets
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them, joins the group (NCCL on GPUs, gloo on CPUs) and pins each
process to GPU ``LOCAL_RANK``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from captioning.errors import CaptioningError

__all__ = [
    "DistContext",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "gather_dicts",
    "gather_objects",
    "init_distributed",
    "is_distributed",
]

_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its global rank, local rank (GPU index) and the world size."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs and scores."""
        return self.rank == 0


def is_distributed() -> bool:
    """A process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def init_distributed(
    device_type: str, *, backend: str | None = None, timeout_minutes: float = 60.0
) -> DistContext:
    """Join the process group that ``torchrun`` set up.

    Args:
        device_type: ``"cuda"`` (NCCL, one GPU per process) or ``"cpu"`` (gloo).
        backend: override the backend.
        timeout_minutes: how long collectives wait (a feature-cache build on rank 0 holds the
            other ranks at a barrier).

    Returns:
        The process's :class:`DistContext`.

    Raises:
        CaptioningError: not started by torchrun, or CUDA ranks without enough GPUs.
    """
    missing = [name for name in _ENV if name not in os.environ]
    if missing:
        raise CaptioningError(
            f"trainer.distributed=true needs torchrun (missing {', '.join(missing)}): run "
            "torchrun --nproc_per_node=NUM_GPUS tools/train.py trainer.distributed=true ..."
        )
    ctx = DistContext(
        int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    )
    if device_type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise CaptioningError(
                f"LOCAL_RANK {ctx.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                "use --nproc_per_node <= the number of GPUs"
            )
        torch.cuda.set_device(ctx.local_rank)
    if not is_distributed():
        dist.init_process_group(
            backend=backend or ("nccl" if device_type == "cuda" else "gloo"),
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    return ctx


def cleanup_distributed() -> None:
    """Leave the process group (if any)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (in place; returned for chaining)."""
    if is_distributed():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (picklable objects)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_dicts(part: dict) -> dict:
    """Merge every rank's dict (e.g. image id -> caption of its shard); keys must not collide."""
    merged: dict = {}
    for piece in gather_objects(part):
        overlap = merged.keys() & piece.keys()
        if overlap:
            raise ValueError(f"ranks returned the same keys: {sorted(overlap)[:5]}")
        merged.update(piece)
    return merged


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
