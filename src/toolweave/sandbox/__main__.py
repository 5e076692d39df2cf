"""``python -m toolweave.sandbox FD MEMORY_BYTES``: one evaluator process of ``EvaluationPool``."""

import sys

from toolweave.sandbox.pool import main

main(sys.argv[1:])
