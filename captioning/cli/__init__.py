"""The command-line programs (``captioning-train``, ...; ``tools/*.py`` run the same ``main``).

The one place in the library that imports argparse and hydra; nothing else in ``captioning``
imports this package.
"""
