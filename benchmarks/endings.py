"""The share of captions that end on a dangling word (article, conjunction, preposition).

``python -m benchmarks.endings RESULTS.json [RESULTS.json ...]`` prints, for each results file
(e.g. ``outputs/demo/test_results.json``), the captions counted, the share that end on a word of
:data:`captioning.evaluation.endings.DANGLING_WORDS` and the commonest such words.
"""

from __future__ import annotations

import sys

from captioning.evaluation.endings import ending_report


def main(paths: list[str]) -> int:
    """Print one line per results file; 2 without files."""
    if not paths:
        print("usage: python -m benchmarks.endings RESULTS.json [RESULTS.json ...]")
        return 2
    for path in paths:
        report = ending_report(path)
        words = ", ".join(f"{w} {n}" for w, n in list(report.words.items())[:5]) or "none"
        print(
            f"{path}: {report.dangling}/{report.captions} captions end on a dangling word "
            f"({100 * report.share:.1f}%): {words}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
