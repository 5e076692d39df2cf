"""``python -m toolweave.cli``: the same command line as the ``toolweave`` script."""

from toolweave.cli import main

main()
