"""`swift sft --deepspeed zero2|zero3` (MS-Swift's shipped configs): 2 ranks x batch 3 x GA 2 == one process.

Real ``swift sft`` runs under torchrun (``NPROC_PER_NODE=2``) on the CPU, over gloo, with
DeepSpeed's ``DeepSpeedEngine`` (ZeRO-2: partitioned gradients and optimizer state; ZeRO-3:
partitioned weights too). Each optimizer step sees the 12 rows below once (2 ranks x 3 rows x
2 accumulation steps), so every step must log the same loss, loss parts, token counts and
gradient norm as one process with one batch of 12: DeepSpeed divides the loss by the
accumulation steps unless the Trainer tells it not to, so a loss already divided by
``num_items_in_batch`` divided twice would show here. The order is fixed
(``--train_dataloader_shuffle false``): MS-Swift gives rank 1 rows 1, 3, 5 in its first
micro-batch, all with negative rewards (a rank with only negative rewards in a step).

CPU-only scaffolding (tests/cpu_deepspeed/sitecustomize.py, its docstring says why): the
process group is created with gloo before the Trainer, which then reuses it
(``--accelerator_config '{"use_configured_state": true}'``); ``--fp16 false --bf16 false``
because MS-Swift turns fp16 on otherwise, which DeepSpeed refuses on the CPU.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from swift_helpers import PROMPTS, write_jsonl

pytestmark = pytest.mark.slow

SUPPORT = Path(__file__).resolve().parents[1] / "cpu_deepspeed"
#: (prompt, response, reward, group): rows 1, 3, 5 (rank 1's first micro-batch) are all negative.
ROWS = [
    (0, "The answer is 5.", 1.0, "g1"),
    (0, "The answer is 6, I think.", -0.2, "g1"),
    (1, "Half of 48 is 24, so 72.", 1.0, "g2"),
    (0, "2 + 3 = 7. The answer is 7.", -0.2, "g1"),
    (1, "The answer is 72.", 0.5, "g2"),
    (1, "She sold 96 clips.", -0.2, "g2"),
    (2, "10 - 4 = 6.", 1.0, "g3"),
    (2, "10 - 4 = 14, so 14.", -0.5, "g3"),
    (2, "Six.", 2.0, "g3"),
    (3, "7 * 8 = 54.", -0.2, "g4"),
    (3, "7 * 8 = 56. The answer is 56.", 1.0, "g4"),
    (3, "56", 0.3, "g4"),
]
QUESTIONS = (*PROMPTS, "What is 10 - 4?", "What is 7 * 8?")
STEPS = 3


@pytest.fixture(scope="module")
def ds_data(data_dir) -> Path:
    items = [
        {
            "messages": [{"role": "user", "content": QUESTIONS[p]}, {"role": "assistant", "content": a}],
            "reward": r,
            "group": g,
        }
        for p, a, r, g in ROWS
    ]
    return write_jsonl(data_dir / "ds12.jsonl", items)


def _train(swift_runs, ds_data, name, loss_type, *args, env=None, nproc=None):
    return swift_runs.sft(
        name,
        [
            "--dataset",
            str(ds_data),
            "--tuner_type",
            "full",
            "--max_steps",
            str(STEPS),
            "--loss_type",
            loss_type,
            "--train_dataloader_shuffle",
            "false",
            *args,
        ],
        env=env,
        nproc=nproc,
    ).ok()


def one_process(swift_runs, ds_data, loss_type):
    return _train(
        swift_runs,
        ds_data,
        f"ds_ref_{loss_type}",
        loss_type,
        "--per_device_train_batch_size",
        "12",
        "--gradient_accumulation_steps",
        "1",
    )


def deepspeed(swift_runs, ds_data, stage, loss_type):
    env = {
        "RIFT_TEST_CPU_DEEPSPEED": "1",
        "DS_ACCELERATOR": "cpu",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SUPPORT), os.environ.get("PYTHONPATH")])),
    }
    return _train(
        swift_runs,
        ds_data,
        f"ds_{stage}_{loss_type}",
        loss_type,
        "--per_device_train_batch_size",
        "3",
        "--gradient_accumulation_steps",
        "2",
        "--deepspeed",
        stage,
        "--accelerator_config",
        '{"use_configured_state": true}',
        "--fp16",
        "false",
        "--bf16",
        "false",
        env=env,
        nproc=2,
    )


@pytest.mark.parametrize("loss_type", ["rift", "rift_gaussian"])
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_two_ranks_equal_one_process(swift_runs, ds_data, stage, loss_type):
    run = deepspeed(swift_runs, ds_data, stage, loss_type)
    base = one_process(swift_runs, ds_data, loss_type)
    assert "world_size: 2" in run.output
    assert "Using deepspeed: {'fp16': {'enabled': 'auto'" in run.output  # MS-Swift's shipped config...
    assert f"'zero_optimization': {{'stage': {stage[-1]}," in run.output  # ...of this stage
    assert "DeepSpeed config has 2" in run.output  # accelerate prepared the DeepSpeed engine (GA 2 from its config)
    assert len(run.train) == len(base.train) == STEPS
    # both train through the fused LM head (no logits: no token_acc); under ZeRO-3 its weight is gathered
    # inside the head's forward
    assert not any("token_acc" in h for h in (*run.train, *base.train))
    for step, (got, want) in enumerate(zip(run.train, base.train), 1):
        for key in ("loss", "grad_norm", "rift_pos_loss", "rift_neg_loss", "rift_neg_prob"):
            assert math.isfinite(got[key])
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), (step, key, got[key], want[key])
        for key in ("rift_pos_tokens", "rift_neg_tokens"):
            assert got[key] == want[key], f"step {step} {key}"
        assert got["rift_pos_loss"] + got["rift_neg_loss"] == pytest.approx(got["loss"], rel=1e-5)
    assert abs(base.train[0]["loss"] - base.train[-1]["loss"]) > 1e-3  # the weights moved: steps 2-3 compare gradients
