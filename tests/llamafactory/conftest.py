"""Session fixture of the LLaMA-Factory tests: one workspace (tiny model, datasets) for all runs."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from lf_helpers import Workspace, ok  # noqa: E402


@pytest.fixture(scope="session")
def lf(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("lf"))


@pytest.fixture(scope="session")
def plain(lf):
    """Plain LoRA SFT, no RIFT: the baseline (evaluated after step 3; its tokenized_path has no rewards)."""
    evaluation = {"eval_dataset": "eval", "per_device_eval_batch_size": 4, "eval_strategy": "steps", "eval_steps": 3}
    config = lf.config("plain", finetuning_type="lora", tokenized_path=str(lf.root / "tok_plain"), **evaluation)
    return ok(lf.train(config))
