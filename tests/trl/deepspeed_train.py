"""A RiftSFTTrainer run for tests/trl/test_trl_deepspeed.py, started by ``accelerate launch``.

``accelerate launch --config_file ZERO.yaml --num_processes 2 deepspeed_train.py MODEL OUT LOSS_TYPE``
(TRL's shipped DeepSpeed accelerate config): each rank trains batch 3 with
gradient accumulation 2 on 12 rows with the ``REWARDS`` below; the DeepSpeed settings reach the
Trainer from accelerate's environment, as in any ``accelerate launch`` of a TRL script. Rank 0
writes the per-step logs, the world size and the engine's class name to ``OUT/logs.json``.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/harness.py

from harness import leave_without_teardown  # noqa: E402
from trl_helpers import config, messages_rows, train_logs, trainer  # noqa: E402

#: rows 3-5 (rank 1's first micro-batch, sequential sampling) all have negative rewards
REWARDS = [1.0, -0.2, 0.5, -1.0, -0.2, -0.5, 2.0, -0.5, 0.3, 0.7, -0.4, 1.5]
STEPS = 3


def main():
    model_dir, out, loss_type = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    args = config(
        out,
        loss_type=loss_type,
        per_device_train_batch_size=3,
        gradient_accumulation_steps=2,
        max_steps=STEPS,
        accelerator_config={"use_configured_state": True},
    )
    tr = trainer(model_dir, args, messages_rows(REWARDS))
    logs = train_logs(tr)
    if tr.accelerator.is_main_process:
        (out / "logs.json").write_text(
            json.dumps(
                {
                    "world": tr.accelerator.num_processes,
                    "engine": type(tr.model_wrapped).__name__,
                    "zero_stage": tr.accelerator.state.deepspeed_plugin.zero_stage,
                    "logs": logs,
                }
            )
        )


if __name__ == "__main__":
    main()
    leave_without_teardown()  # tests/harness.py: skips the teardown where the exit abort happens
