"""Scores as console tables (what ``tools/train.py`` and ``tools/evaluate.py`` print)."""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["format_table"]


def format_table(scores: Mapping[str, float]) -> str:
    """Formats scores as an aligned two-column text table, 4 decimals (integers as integers).

    Args:
        scores: ``{metric: value}``, e.g. ``report.scores``.

    Returns:
        The table (header, rule, one line per metric), without a final newline.
    """
    width = max([len("metric"), *(len(k) for k in scores)])
    lines = [f"{'metric':<{width}}   score", f"{'-' * width}  ------"]
    for key, value in scores.items():
        if isinstance(value, int):  # counts such as num_images
            text = f"{value:6d}"
        else:
            text = "   nan" if math.isnan(value) else f"{value:6.4f}"
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)
