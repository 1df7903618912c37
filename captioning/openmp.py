"""CPU threads: OpenMP's wait policy (set before torch loads) and the default thread count.

PyTorch runs its CPU kernels on OpenMP threads (GNU libgomp in the Linux wheels). Unless told
otherwise, a thread that reaches the end of a parallel region spins for a while before it sleeps.
On a machine of its own that saves a wake-up per kernel; beside another job it is catastrophic:
the spinning thread holds a core the thread it waits for needs, and a training step of the shapes
attention model took 4.7 s instead of 0.2 s beside one other job on 2 cores. With
``OMP_WAIT_POLICY=PASSIVE`` waiting threads sleep at once. libgomp reads the variable once, when
it is loaded (``import torch``), so :func:`set_wait_policy` runs first thing in
``import captioning``, before the package imports torch: the commands and any script that imports
``captioning`` before ``torch`` get it. A value the user set (``OMP_WAIT_POLICY=ACTIVE`` for the
spinning behaviour) is left alone. Intel's OpenMP (some conda builds) reads the same variable.

This module imports nothing heavy: it must run before torch does.
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["WAIT_POLICY", "available_cores", "default_threads", "set_wait_policy"]

#: The wait policy set when the user has not chosen one.
WAIT_POLICY = "PASSIVE"
_CGROUP = Path("/sys/fs/cgroup")


def set_wait_policy(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is already set (the user's choice wins).

    Args:
        environ: the environment to change (None: ``os.environ``).

    Returns:
        Whether it was set here.
    """
    env = os.environ if environ is None else environ
    if env.get("OMP_WAIT_POLICY", "").strip():
        return False
    env["OMP_WAIT_POLICY"] = WAIT_POLICY
    return True


def _cgroup_quota(root: Path = _CGROUP) -> float | None:
    """CPUs this process's cgroup may use (``docker --cpus``, Kubernetes limits), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cores(root: Path = _CGROUP) -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, SLURM, cpusets), capped
    by its cgroup's CPU quota (containers), at least 1.

    Args:
        root: where the cgroup files are (a test's folder).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def default_threads(root: Path = _CGROUP) -> int:
    """``trainer.threads: null``: one torch thread per available core (:func:`available_cores`).

    Unlike PyTorch's own default (the machine's cores) it respects a container's CPU quota; with
    the passive wait policy it keeps an idle machine's speed and degrades gracefully beside other
    jobs (``python -m benchmarks threads``).
    """
    return available_cores(root)
