"""Session fixture of the LLaMA-Factory tests: one workspace (tiny model, datasets) for all runs."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from lf_helpers import Workspace  # noqa: E402


@pytest.fixture(scope="session")
def lf(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("lf"))
