"""TRL under ``accelerate launch`` with DeepSpeed ZeRO-2 and ZeRO-3: 2 ranks x batch 3 x GA 2 == batch 12.

``accelerate launch --config_file`` with TRL's shipped ``zero2.yaml``/``zero3.yaml`` (what
``trl sft --accelerate_config zero2`` uses; here with ``--num_processes 2 --mixed_precision no``)
starts tests/trl/deepspeed_train.py on 2 CPU processes over gloo; each optimizer step sees the 12
rows once, so every step must log the same loss, loss parts, token counts and gradient norm as one
process with one batch of 12, for ``rift`` (mixed rewards; rank 1's first micro-batch has only
negative rewards) and ``rift_gaussian``.

CPU-only scaffolding (tests/cpu_deepspeed/sitecustomize.py says why): the gloo process group is
made before the Trainer, which reuses it (``accelerator_config={"use_configured_state": True}``).
"""

import json
import math
import os
import sys
from pathlib import Path

import pytest
from harness import free_port, run_command
from trl_helpers import BIN, config, messages_rows, train_logs, trainer

sys.path.insert(0, str(Path(__file__).parent))
from deepspeed_train import REWARDS, STEPS  # noqa: E402

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
SUPPORT = HERE.parent / "cpu_deepspeed"
KEYS = ("loss", "grad_norm", "rift/pos_loss", "rift/neg_loss", "rift/neg_prob", "rift/pos_tokens", "rift/neg_tokens")


def launch(model_dir, out: Path, stage: int, loss_type: str) -> dict:
    """TRL's shipped ``trl/accelerate_configs/zero{stage}.yaml`` (8 GPUs, bf16) on 2 processes in float32."""
    import trl

    out.mkdir(parents=True)
    shipped = Path(trl.__file__).parent / "accelerate_configs" / f"zero{stage}.yaml"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RIFT_TEST_CPU_DEEPSPEED": "1",
        "DS_ACCELERATOR": "cpu",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SUPPORT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    port = str(free_port())
    done = run_command(
        [
            str(BIN / "accelerate"),
            "launch",
            "--config_file",
            str(shipped),
            "--num_processes",
            "2",
            "--mixed_precision",
            "no",
            "--main_process_port",
            port,
            str(HERE / "deepspeed_train.py"),
            str(model_dir),
            str(out),
            loss_type,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "logs.json").read_text())


@pytest.mark.parametrize("loss_type", ["rift", "rift_gaussian"])
def test_deepspeed_zero2_and_zero3_equal_one_process(model_dir, tmp_path, loss_type):
    single = train_logs(
        trainer(
            model_dir,
            config(tmp_path / "b12", loss_type=loss_type, per_device_train_batch_size=12, max_steps=STEPS),
            messages_rows(REWARDS),
        )
    )
    assert len(single) == STEPS and abs(single[0]["loss"] - single[-1]["loss"]) > 1e-3  # the weights moved
    for stage in (2, 3):
        run = launch(model_dir, tmp_path / f"zero{stage}", stage, loss_type)
        assert (run["world"], run["engine"], run["zero_stage"]) == (2, "DeepSpeedEngine", stage)
        assert len(run["logs"]) == STEPS
        for step, (got, want) in enumerate(zip(run["logs"], single), 1):
            for key in KEYS:
                assert math.isfinite(got[key])
                assert math.isclose(got[key], want[key], rel_tol=1e-5, abs_tol=1e-6), (stage, step, key, got, want)
