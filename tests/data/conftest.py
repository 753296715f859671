"""Fixtures of the `rift-losses` command tests (helpers: datahelpers.py)."""

import pytest

from datahelpers import make_runner


@pytest.fixture
def run(capsys):
    """Run ``rift-losses ARGS`` in this process (no start-up cost); returns exit code, stdout, stderr."""
    return make_runner(capsys)
