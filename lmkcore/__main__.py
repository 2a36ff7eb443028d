"""``python -m lmkcore [options]``: the same as ``./run_all.sh [options]`` (without the environment set-up).

Executes the notebooks with papermill (see :mod:`lmkcore.cli` and ``--help``);
``python -m lmkcore --docs`` builds the API reference.
"""
import sys

from lmkcore.cli import main

if __name__ == "__main__":
    sys.exit(main())
