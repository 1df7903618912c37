"""CPU threads: OpenMP's wait policy (set before torch loads) and the default thread count.

PyTorch runs its CPU kernels on OpenMP threads (GNU libgomp in the Linux wheels). Unless told
otherwise, a thread that reaches the end of a parallel region spins for a while before it sleeps.
On a machine of its own that saves a wake-up per kernel (on the idle 2-core machine, training the
shapes demo ran 1.9x faster than with sleeping threads); beside another job it is catastrophic:
the spinning thread holds a core the thread it waits for needs, and a training step of the shapes
attention model took 4.7 s instead of 0.2 s beside one other job on 2 cores. So
:func:`set_wait_policy` looks before it chooses: it samples how busy the cores this process may
use are (``/proc/stat`` over 50 ms, while this process is still importing) and sets
``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep at once) when other work keeps at least half a
core busy; on an idle machine it leaves libgomp's own spin-then-sleep. libgomp reads the variable
once, when it is loaded (``import torch``), so this runs first thing in ``import captioning``,
before the package imports torch. A value the user set (``ACTIVE`` or ``PASSIVE``) is left
alone. The choice is made once, at start: a job that starts later beside a spinning run still
slows it (set ``OMP_WAIT_POLICY=PASSIVE`` on machines shared by design). Intel's OpenMP (some
conda builds) reads the same variable. This module imports nothing heavy: it must run before
torch does.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import MutableMapping
from pathlib import Path

__all__ = [
    "BUSY_CORES",
    "WAIT_POLICY",
    "available_cores",
    "busy_cores",
    "default_threads",
    "set_wait_policy",
]

#: The wait policy set when the user has not chosen one and the machine is busy.
WAIT_POLICY = "PASSIVE"
#: Other work keeping at least this many cores busy makes the machine busy.
BUSY_CORES = 0.5
_CGROUP = Path("/sys/fs/cgroup")


def _cpu_times(stat: Path) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``'s first line."""
    fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(seconds: float = 0.05, stat: Path = Path("/proc/stat")) -> float | None:
    """How many cores were busy over `seconds` (this process, still importing, barely counts),
    or None where ``/proc/stat`` cannot be read (not Linux)."""
    try:
        busy0, total0 = _cpu_times(stat)
        time.sleep(seconds)
        busy1, total1 = _cpu_times(stat)
    except (OSError, ValueError, IndexError):
        return None
    cores = os.cpu_count() or 1
    return cores * (busy1 - busy0) / max(total1 - total0, 1)


def set_wait_policy(
    environ: MutableMapping[str, str] | None = None, busy: float | bool | None = True
) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` when the machine is busy, unless the user set it.

    Args:
        environ: the environment to change (None: ``os.environ``).
        busy: the busy cores (:func:`busy_cores`); ``True``: measure them now. Unknown (None):
            not busy.

    Returns:
        Whether it was set here.
    """
    env = os.environ if environ is None else environ
    if env.get("OMP_WAIT_POLICY", "").strip():
        return False
    if busy is True:
        busy = busy_cores()
    if busy is None or busy < BUSY_CORES:
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
    the wait policy :func:`set_wait_policy` chooses it keeps an idle machine's speed and degrades
    gracefully beside jobs already running (``python -m benchmarks threads``).
    """
    return available_cores(root)
