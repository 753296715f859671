import sys
from pathlib import Path

import pytest
import torch

# Helper modules of this directory (core_reference.py) are imported by name.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
