"""What the commands share (captioning.cli.common): the decoding flags."""

import os
import subprocess
import sys

import pytest
from helpers import ROOT, TOOLS, run_tool

from captioning.cli import common


def _options(help_text: str) -> dict[str, str]:
    """``--flag`` -> its whole entry (flag, metavar and help, whitespace collapsed) in --help."""
    entries: dict[str, str] = {}
    flag = None
    for line in help_text.splitlines():
        if line.startswith("  -"):
            flag = next(w for w in line.split() if w.startswith("--")).rstrip(",")
            entries[flag] = line
        elif flag is not None and line.startswith("    "):
            entries[flag] += " " + line
        else:
            flag = None
    return {k: " ".join(v.split()) for k, v in entries.items()}


def test_caption_and_evaluate_share_the_decoding_flags():
    """tools/caption.py and tools/evaluate.py take their decoding flags from one helper: the
    flags both have read the same in --help; caption.py adds --n-best and the sampling flags."""
    helps = {}
    for tool in ("caption.py", "evaluate.py"):
        done = run_tool(tool, "--help", COLUMNS="100")
        assert done.returncode == 0, done.stderr
        helps[tool] = _options(done.stdout)
    caption, evaluate = helps["caption.py"], helps["evaluate.py"]
    shared = ["--beam-size", "--max-len", "--length-penalty", "--no-repeat-ngram-size"]
    for flag in shared:
        assert flag in caption and caption[flag] == evaluate[flag], flag
    sampling = ["--sample", "--temperature", "--top-k", "--num-samples", "--seed"]
    for flag in ["--n-best", *sampling]:
        assert flag in caption and flag not in evaluate, flag


def test_a_closed_output_pipe_ends_a_tool_quietly_with_status_141():
    """``tools/evaluate.py --help | head -0``: the reader is gone before the tool's output is
    flushed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONUNBUFFERED", None)
    proc = subprocess.Popen(
        [sys.executable, str(TOOLS / "evaluate.py"), "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.stdout.close()  # nobody reads: the flush of the tool's output fails with EPIPE
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_a_broken_pipe_inside_a_tool_is_status_141_with_its_output_sent_nowhere(monkeypatch):
    """(With ``PYTHONUNBUFFERED=1`` a print itself fails; ``| head`` in ``make demo`` did.)"""
    redirected = []
    monkeypatch.setattr(common.os, "dup2", lambda fd, to: redirected.append(to))

    @common.one_line_errors
    def tool() -> int:
        raise BrokenPipeError(32, "Broken pipe")

    assert tool() == 141 and redirected == [sys.stdout.fileno()]


@pytest.mark.parametrize(
    "tool",
    [
        "caption.py",
        "evaluate.py",
        "fresh_shapes.py",
        "make_shapes.py",
        "plot_run.py",
        "convert_bottom_up_tsv.py",
        "extract_shapes_regions.py",
    ],
)
def test_every_tools_usage_error_is_one_line_naming_its_help(tool):
    """A misspelt flag is one ``error: ... (see TOOL --help)`` line and status 2 in every tool
    (they all parse with ``CommandParser``), not argparse's usage block."""
    done = run_tool(tool, "--no-such-flag")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("error: "), done.stderr  # (a missing required one, or the flag)
    assert f"(see {tool} --help)" in done.stderr
