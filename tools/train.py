"""Train a captioning model: ``python tools/train.py [group=option ...] [key=value ...]``.

The same command as ``captioning-train``: see :mod:`captioning.cli.train`.
"""

import sys

from captioning.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
