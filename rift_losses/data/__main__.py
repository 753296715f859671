"""``python -m rift_losses.data``: the same as the ``rift-losses`` command."""

import sys

from .cli import main

if __name__ == "__main__":  # not when multiprocessing's spawn re-imports this module in a worker
    sys.exit(main())
