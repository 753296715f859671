"""The core loss under FSDP2 (``torch.distributed.fsdp.fully_shard``) on a 2-process gloo CPU mesh.

A sharded tiny model (tests/core/fsdp_worker.py) trains four steps on half of each global batch
per rank and matches, step after step, an unsharded replica trained on the whole batch in one
process: the loss, its positive and negative parts, and every parameter's gradient. Step 3 gives
one rank no target token, step 4 only negative rewards: no hang (a timeout), no NaN, same result.
"""

import json
import math
import os
import sys
from pathlib import Path

import pytest
from harness import free_port, run_command

WORKER = Path(__file__).with_name("fsdp_worker.py")


@pytest.mark.parametrize("method", ["none", "gaussian"])
def test_fully_shard_two_ranks_equal_one_process(tmp_path, method):
    out = tmp_path / "log.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(free_port())}
    done = run_command(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            env["MASTER_PORT"],
            str(WORKER),
            str(out),
            method,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = json.loads(out.read_text())
    assert run["world"] == 2 and len(run["steps"]) == 4
    for i, step in enumerate(run["steps"], 1):
        assert all(math.isfinite(x) for x in step["fsdp"] + sum(step["local"], []) + [step["grad_norm"]]), (i, step)
        for got, want in zip(step["fsdp"], step["ref"]):  # loss, positive part, negative part
            assert got == pytest.approx(want, rel=1e-5, abs=1e-7), (i, step)
        assert step["grad_diff"] < 1e-6 * max(1.0, step["ref_norm"]), (i, step)
        assert step["grad_norm"] == pytest.approx(step["ref_norm"], rel=1e-5), (i, step)
        assert step["ref_norm"] > 1e-3  # a real gradient was compared
    no_target, only_negative = run["steps"][2], run["steps"][3]
    assert no_target["local"][1] == [0.0, 0.0] and no_target["local"][0][0] > 0  # rank 1 had nothing to learn
    assert only_negative["local"][1][0] > 0 and only_negative["local"][1][1] == 0.0  # rank 1: negative part only
