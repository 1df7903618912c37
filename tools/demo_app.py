"""Serve the web demo of a trained model: ``python tools/demo_app.py --help``.

The same command as ``captioning-demo``: see :mod:`captioning.cli.demo`.
"""

import sys

from captioning.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
