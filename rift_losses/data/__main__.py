"""``python -m rift_losses.data``: the same as the ``rift-losses`` command."""

import sys

from .cli import main

sys.exit(main())
