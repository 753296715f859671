"""LLaMA-Factory's ``deepspeed:`` key, ZeRO-2 and ZeRO-3: 2 ranks x batch 3 x GA 2 == one process of batch 12.

Real ``llamafactory-cli train`` runs under torchrun (``FORCE_TORCHRUN=1 NPROC_PER_NODE=2``) on
the CPU, over gloo, with DeepSpeed's engine; the ZeRO config files are LLaMA-Factory's
``examples/deepspeed/ds_z{2,3}_config.json`` (the repository's examples are not in the wheel;
written here as shipped, minus its monitor section). Each optimizer step sees the 12 rows once,
so every step logs the same loss, loss parts, token counts (trainer_log.jsonl) and gradient norm
(trainer_state.json) as one process with one batch of 12, for ``rift`` with mixed rewards and
gaussian-normalized RIFT. Fixed order (``disable_shuffling``): rank 1's first micro-batch is rows
3-5, all with negative rewards.

CPU-only scaffolding (tests/cpu_deepspeed/sitecustomize.py says why): the process group is made
with gloo before the Trainer, which reuses it (``accelerator_config: {use_configured_state: true}``).
"""

import json
import math
import os
from pathlib import Path

import pytest

from lf_helpers import ok

pytestmark = pytest.mark.slow

SUPPORT = Path(__file__).resolve().parents[1] / "cpu_deepspeed"
STATS = ("rift/pos_loss", "rift/neg_loss", "rift/pos_tokens", "rift/neg_tokens", "rift/neg_prob")
#: rewards of the 12 rows (groups of 3: "d0".."d3"); rows 3-5 (rank 1's first micro-batch) are negative
REWARDS = [1.0, -0.2, 1.0, -0.2, -0.5, -0.2, 1.0, -0.5, 2.0, -0.2, 1.0, 0.3]
RIFT = {"rift": {"use_rift_loss": True}, "gaussian": {"use_rift_loss": True, "rift_reward_normalization": "gaussian"}}


def zero_config(stage: int) -> dict:
    """LLaMA-Factory's examples/deepspeed/ds_z{stage}_config.json (0.9.5), without monitor_config."""
    zero = {
        2: {
            "stage": 2,
            "allgather_partitions": True,
            "allgather_bucket_size": 5e8,
            "overlap_comm": False,
            "reduce_scatter": True,
            "reduce_bucket_size": 5e8,
            "contiguous_gradients": True,
            "round_robin_gradients": True,
        },
        3: {
            "stage": 3,
            "overlap_comm": False,
            "contiguous_gradients": True,
            "sub_group_size": 1e9,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1e9,
            "stage3_max_reuse_distance": 1e9,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
    }[stage]
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "fp16": {
            "enabled": "auto",
            "loss_scale": 0,
            "loss_scale_window": 1000,
            "initial_scale_power": 16,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "bf16": {"enabled": "auto"},
        "zero_optimization": zero,
        "comms_config": {"verbose": False},
    }


@pytest.fixture(scope="module")
def ds_dataset(lf) -> str:
    rows = [
        {
            "instruction": f"D{i}: What is {i} times {i + 2}?",
            "output": f"It is {i * (i + 2) + (r < 0)}.",
            "score": r,
            "pid": f"d{i // 3}",
        }
        for i, r in enumerate(REWARDS)
    ]
    (lf.data / "ds12.json").write_text(json.dumps(rows))
    info = json.loads((lf.data / "dataset_info.json").read_text())
    info["ds12"] = {
        "file_name": "ds12.json",
        "columns": {"prompt": "instruction", "response": "output", "reward": "score", "group": "pid"},
    }
    (lf.data / "dataset_info.json").write_text(json.dumps(info, indent=1))
    for stage in (2, 3):
        (lf.root / f"ds_z{stage}_config.json").write_text(json.dumps(zero_config(stage), indent=1))
    return "ds12"


_runs = {}


def _run(lf, ds_dataset, variant, stage):
    name = f"ds_{variant}_z{stage}" if stage else f"ds_{variant}_one"
    if name not in _runs:
        common = dict(dataset=ds_dataset, **RIFT[variant])
        if stage:
            config = lf.config(
                name,
                **common,
                per_device_train_batch_size=3,
                gradient_accumulation_steps=2,
                deepspeed=str(lf.root / f"ds_z{stage}_config.json"),
                accelerator_config={"use_configured_state": True},
            )
            env = {
                "FORCE_TORCHRUN": "1",
                "NPROC_PER_NODE": "2",
                "RIFT_TEST_CPU_DEEPSPEED": "1",
                "DS_ACCELERATOR": "cpu",
                "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(SUPPORT), os.environ.get("PYTHONPATH")])),
            }
        else:
            config, env = lf.config(name, **common, per_device_train_batch_size=12), None
        _runs[name] = ok(lf.train(config, env=env))
    return _runs[name]


def _grad_norms(run):
    history = json.loads((run.output_dir / "trainer_state.json").read_text())["log_history"]
    return [e["grad_norm"] for e in history if "grad_norm" in e]


@pytest.mark.parametrize("variant", ["rift", "gaussian"])
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_two_ranks_equal_one_process(lf, ds_dataset, stage, variant):
    run, base = _run(lf, ds_dataset, variant, stage), _run(lf, ds_dataset, variant, None)
    assert "world size: 2" in run.output and "distributed training: True" in run.output
    assert "DeepSpeed config has 2" in run.output  # accelerate prepared the DeepSpeed engine (GA 2 from its config)
    # both runs train through the fused LM head (under ZeRO-3 its weight is gathered inside the head's forward)
    assert "rift_fused_head: training steps" in run.output and "rift_fused_head: training steps" in base.output
    assert len(run.train_logs) == len(base.train_logs) == 3
    for step, (got, want) in enumerate(zip(run.train_logs, base.train_logs), 1):
        keys = {k for k in want if k in ("loss", *STATS)}
        assert keys == {k for k in got if k in ("loss", *STATS)} == {"loss", *STATS}, (got, want)
        for key in keys:
            assert math.isfinite(got[key])
            assert math.isclose(got[key], want[key], rel_tol=1e-5, abs_tol=1e-5), (step, key, got, want)
        assert math.isclose(got["rift/pos_loss"] + got["rift/neg_loss"], got["loss"], rel_tol=1e-5, abs_tol=1e-5)
    norms, want_norms = _grad_norms(run), _grad_norms(base)
    assert len(norms) == len(want_norms) == 3 and all(math.isfinite(n) for n in norms)
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(norms, want_norms)), (norms, want_norms)
    losses = [e["loss"] for e in base.train_logs]
    assert abs(losses[0] - losses[-1]) > 1e-3  # the weights moved: steps 2-3 compare the gradients too
