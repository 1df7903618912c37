"""captioning.io: atomic writes and the output-folder check."""

from __future__ import annotations

import os

import pytest
import torch

from captioning.errors import CaptioningError
from captioning.io import atomic_write, check_writable, write_text_atomic


def test_atomic_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "out.bin"  # the folder is created
    assert atomic_write(path, lambda f: f.write(b"one")) == path
    atomic_write(path, lambda f: f.write(b"two"))
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.bin"]


def test_a_failing_writer_leaves_the_old_file_intact_and_no_temporary_file(tmp_path):
    path = tmp_path / "metrics.csv"
    write_text_atomic(path, "epoch\n1\n")

    def half_then_fail(f):
        f.write(b"epoch\n1\n2")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "epoch\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_write_text_atomic_keeps_the_text_as_given(tmp_path):
    text = "a,b\r\nä,😀\n"
    write_text_atomic(tmp_path / "t.csv", text)
    assert (tmp_path / "t.csv").read_bytes() == text.encode("utf-8")


def test_torch_save_through_atomic_write(tmp_path):
    path = atomic_write(tmp_path / "x.pt", lambda f: torch.save({"w": torch.ones(2)}, f))
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_file_gets_the_mode_the_umask_gives(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        path = write_text_atomic(tmp_path / f"f{mask:o}.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode, oct(path.stat().st_mode)


def test_check_writable_creates_the_folder(tmp_path):
    check_writable(tmp_path / "a" / "b", "data.cache_dir")
    assert (tmp_path / "a" / "b").is_dir()
    assert not list((tmp_path / "a" / "b").iterdir())  # the probe file is gone


def test_check_writable_is_one_line_naming_the_setting(tmp_path):
    afile = tmp_path / "a_file"
    afile.write_text("")
    with pytest.raises(CaptioningError) as err:
        check_writable(afile / "run", "hydra.run.dir (run_dir)")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write to {afile / 'run'} (")
    assert message.endswith("set hydra.run.dir (run_dir) to a folder you can write to")


def test_a_non_durable_atomic_write_renames_into_place_without_fsync(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    target = tmp_path / "a.bin"
    atomic_write(target, lambda f: f.write(b"x" * 10), durable=False)
    assert target.read_bytes() == b"x" * 10 and synced == []
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # no temporary file left
    atomic_write(target, lambda f: f.write(b"y"))  # durable (the default): file and folder
    assert len(synced) == 2
