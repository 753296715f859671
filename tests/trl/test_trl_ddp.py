"""Data parallel through the real trainer under torchrun (2 gloo ranks on CPU): 2 x batch 3 == batch 6."""

import json
import math
import os
from pathlib import Path

import pytest
from harness import free_port, run_command
from trl_helpers import BIN, REWARDS, config, messages_rows, train_logs, trainer, turns_rows


def _torchrun(model_dir, out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "true"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    script = Path(__file__).parent / "ddp_train.py"
    done = run_command(
        [
            str(BIN / "torchrun"),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            str(script),
            str(model_dir),
            str(out),
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ddp = json.loads((out / "logs.json").read_text())
    assert ddp["world"] == 2
    for log in ddp["logs"]:  # the statistics are scaled as the loss is
        assert math.isclose(log["rift/pos_loss"] + log["rift/neg_loss"], log["loss"], rel_tol=1e-5, abs_tol=1e-6), log
    return ddp


@pytest.mark.slow
def test_two_ranks_without_averaging_tokens_across_devices_log_parts_that_add_up(model_dir, tmp_path):
    """average_tokens_across_devices=False: each rank divides by its own tokens and nothing scales the loss."""
    assert len(_torchrun(model_dir, tmp_path / "local", "local")["logs"]) == 2


@pytest.mark.slow
def test_two_ranks_of_batch_3_equal_batch_6(model_dir, tmp_path):
    ddp = _torchrun(model_dir, tmp_path / "ddp")
    single = train_logs(
        trainer(
            model_dir, config(tmp_path / "b6", loss_type="rift", per_device_train_batch_size=6), messages_rows(REWARDS)
        )
    )
    assert len(ddp["logs"]) == len(single) == 2
    for a, b in zip(single, ddp["logs"]):
        for key in ("loss", "grad_norm", "rift/pos_loss", "rift/neg_loss", "rift/pos_tokens", "rift/neg_tokens"):
            assert math.isclose(a[key], b[key], rel_tol=1e-5, abs_tol=1e-6), (key, a[key], b[key])


@pytest.mark.slow
def test_two_ranks_of_per_turn_rows_equal_one_batch(model_dir, tmp_path):
    """Per-turn rewards ((B, T) per batch) under data parallel: 2 ranks x batch 2 == batch 4."""
    ddp = _torchrun(model_dir, tmp_path / "turns", "turns")
    single = train_logs(
        trainer(model_dir, config(tmp_path / "b4", loss_type="rift", per_device_train_batch_size=4), turns_rows())
    )
    assert len(ddp["logs"]) == len(single) == 2
    for a, b in zip(single, ddp["logs"]):
        for key in ("loss", "grad_norm", "rift/pos_loss", "rift/neg_loss", "rift/pos_tokens", "rift/neg_tokens"):
            assert math.isclose(a[key], b[key], rel_tol=1e-5, abs_tol=1e-6), (key, a[key], b[key])
