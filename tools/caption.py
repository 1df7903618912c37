"""Caption images with a trained model: ``python tools/caption.py --help``.

The same command as ``captioning-caption``: see :mod:`captioning.cli.caption`.
"""

import sys

from captioning.cli.caption import main

if __name__ == "__main__":
    sys.exit(main())
