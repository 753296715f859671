"""Session fixtures of the TRL tests: one tiny local Qwen2 model and tokenizer for all runs."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    from rift_dev.tiny_model import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("trl_model") / "tiny")
