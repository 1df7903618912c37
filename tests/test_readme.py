"""README.md stays runnable as read: every run folder a command reads was made by a command before."""

from __future__ import annotations

import re

from helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_run_folder_a_command_reads_is_made_by_a_command_before_it() -> None:
    """A reader going down the README meets the command that makes ``outputs/NAME`` (make demo,
    ``hydra.run.dir=outputs/NAME``) before one that reads it (``-c``, ``--checkpoint``,
    ``init_from``); issue 23: ``outputs/attn`` was used long before its command."""
    made = {"outputs/demo": README.index("make demo")}
    for found in re.finditer(r"hydra\.run\.dir=(outputs/\w+)", README):
        made.setdefault(found.group(1), found.start())
    read = re.finditer(r"(?:-c|--checkpoint|init_from) (outputs/\w+)", README)
    late = [
        (m.group(1), README.count("\n", 0, m.start()) + 1)
        for m in read
        if made.get(m.group(1), len(README)) > m.start()
    ]
    assert late == [], "run folders used before the command that makes them (name, line)"


def test_the_readme_names_the_cpu_threads_setting() -> None:
    assert "`trainer.threads=N`" in README
