"""The shared helpers of tools/caption.py, tools/evaluate.py and tools/demo_app.py.

Transitional (issue 19): they live in :mod:`captioning.cli.common`; this file goes when those
three commands move into ``captioning/cli/``.
"""

from captioning.cli.common import add_captioner_arguments, one_line_errors

__all__ = ["add_captioner_arguments", "one_line_errors"]
