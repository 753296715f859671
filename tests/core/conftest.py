import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

#: Tolerances bundled per dtype: (abs tol on scalar losses, abs tol on gradients) used in the
#: error-budget checks |impl - ref64| <= |same math in dtype - ref64| + tol.
TOLERANCES = {
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (1e-3, 1e-4),
    torch.float16: (1e-3, 1e-5),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
