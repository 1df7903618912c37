"""CPU threads (captioning.openmp, captioning.devices.configure_torch): the default thread count
and OpenMP's wait policy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from captioning.devices import configure_torch
from captioning.openmp import available_cores, busy_cores, default_threads, set_wait_policy


def test_wait_policy_is_passive_on_a_busy_machine_only_when_the_user_has_not_chosen_one():
    env: dict[str, str] = {}
    assert set_wait_policy(env, busy=1.0) is True and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for chosen in ("ACTIVE", "passive", "active"):
        env = {"OMP_WAIT_POLICY": chosen}
        assert set_wait_policy(env, busy=2.0) is False and env == {"OMP_WAIT_POLICY": chosen}
    blank = {"OMP_WAIT_POLICY": " "}  # empty counts as unset, as libgomp reads it
    assert set_wait_policy(blank, busy=0.5) is True and blank["OMP_WAIT_POLICY"] == "PASSIVE"


def test_an_idle_or_unknown_machine_keeps_openmps_own_spin_then_sleep():
    for busy in (0.0, 0.49, None):
        env: dict[str, str] = {}
        assert set_wait_policy(env, busy=busy) is False and env == {}


def test_busy_cores_reads_the_cpu_time_spent_outside_idle_between_two_samples(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal: 100 busy of 200 jiffies between samples
    lines = iter(["cpu  1000 0 0 1000 0 0 0 0\n", "cpu  1090 0 10 1090 10 0 0 0\n"])

    class Stat(type(stat)):  # each read is the next sample
        def read_text(self, *args, **kwargs):
            return next(lines)

    assert busy_cores(0.0, Stat(stat)) == pytest.approx((os.cpu_count() or 1) * 0.5)
    assert busy_cores(0.0, tmp_path / "missing") is None


_FIRST_TORCH_IMPORT = """
import os, sys
seen = []
class Watch:  # records OMP_WAIT_POLICY at the moment torch is first imported
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
sys.meta_path.insert(0, Watch())
import captioning
print(seen[0], os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.parametrize("user", [None, "ACTIVE"])
def test_import_captioning_chooses_the_wait_policy_before_torch_loads(user):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user is not None:
        env["OMP_WAIT_POLICY"] = user
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_TORCH_IMPORT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    at_torch, after = done.stdout.split()
    assert at_torch == after  # what import captioning chose was in place when torch loaded
    assert at_torch == (user or at_torch) and at_torch in ("ACTIVE", "PASSIVE", "None")


def _cgroup(tmp_path, v2: str | None = None, v1: tuple[str, str] | None = None):
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2)
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0])
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1])
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, 8),  # no cgroup files: the affinity
        ({"v2": "max 100000\n"}, 8),  # no quota
        ({"v2": "200000 100000\n"}, 2),  # docker --cpus=2
        ({"v2": "150000 100000\n"}, 2),  # 1.5 CPUs: 2 threads
        ({"v2": "5000 100000\n"}, 1),  # a twentieth of a CPU: still one thread
        ({"v2": "3200000 100000\n"}, 8),  # a quota above the affinity: the affinity
        ({"v1": ("300000", "100000")}, 3),  # cgroup v1
        ({"v1": ("-1", "100000")}, 8),  # v1 without a quota
        ({"v2": "garbage"}, 8),  # unreadable: ignored
    ],
)
def test_default_threads_are_the_affinity_capped_by_the_cgroup_quota(
    tmp_path, monkeypatch, files, expected
):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    root = _cgroup(tmp_path, **files)
    assert available_cores(root) == default_threads(root) == expected


def test_default_threads_without_affinity_fall_back_to_the_cpu_count(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert default_threads(tmp_path) == 6


def test_configure_torch_uses_the_default_threads_when_threads_is_null(monkeypatch):
    monkeypatch.setattr("captioning.devices.default_threads", lambda: 3)
    configure_torch(torch.device("cpu"), threads=None)
    assert torch.get_num_threads() == 3  # conftest's fixture puts 1 back afterwards
    configure_torch(torch.device("cpu"), threads=1)
    assert torch.get_num_threads() == 1
