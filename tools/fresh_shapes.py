"""Caption shapes scenes never seen in training: ``python tools/fresh_shapes.py --help``.

See :mod:`captioning.cli.fresh_shapes`.
"""

import sys

from captioning.cli.fresh_shapes import main

if __name__ == "__main__":
    sys.exit(main())
