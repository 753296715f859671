"""Fixtures of the MS-Swift adapter tests: the tiny offline model, datasets, the run cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from swift_helpers import Swift, rows, write_jsonl


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from rift_dev.tiny_model import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("swift_model") / "tiny-qwen2")


@pytest.fixture(scope="session")
def swift_runs(tmp_path_factory, tiny_model) -> Swift:
    return Swift(tmp_path_factory.mktemp("swift_runs"), tiny_model)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("swift_data")
    write_jsonl(d / "mixed.jsonl", rows())
    write_jsonl(d / "ones.jsonl", rows(rewards=[1.0] * 6))
    write_jsonl(d / "twos.jsonl", rows(rewards=[2.0] * 6))
    return d


@pytest.fixture(scope="session")
def reference_logprobs(tiny_model) -> list[list[float]]:
    """Float64 target log-probabilities of the six rows under the initial weights."""
    from swift_reference import encode_rows, target_logprobs

    return target_logprobs(tiny_model, encode_rows(tiny_model, rows()))
