"""Console tables (captioning.evaluation.tables)."""

from __future__ import annotations

import math

from captioning.evaluation import format_table


def test_format_table() -> None:
    table = format_table({"Bleu_4": 0.19893, "CIDEr": 0.89218, "SPICE": math.nan})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "score"] and len({len(line) for line in lines}) == 1
    assert "0.1989" in lines[2] and "0.8922" in lines[3] and lines[4].endswith("nan")
