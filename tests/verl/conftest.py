"""Fixtures of the verl tests (run in .venvs/verl): verl imported plainly, as a user's job imports it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
