"""Score captions with the official COCO metrics and the grounded metrics: ``python tools/evaluate.py --help``.

The same command as ``captioning-evaluate``: see :mod:`captioning.cli.evaluate`.
"""

import sys

from captioning.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
