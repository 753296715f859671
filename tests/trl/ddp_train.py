"""A RiftSFTTrainer run for the data-parallel test: ``torchrun --nproc_per_node 2 ddp_train.py MODEL OUT [MODE]``.

MODE "local" or "turns". Each rank trains batch 3 (2 gloo ranks = batch 6 per step; ``turns``: batch 2 of per-turn rows,
batch 4 per step); rank 0 writes the per-step logs to ``OUT/logs.json``.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/harness.py

from harness import leave_without_teardown  # noqa: E402
from trl_helpers import REWARDS, config, messages_rows, train_logs, trainer, turns_rows  # noqa: E402


def main():
    model_dir, out = sys.argv[1], Path(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else ""
    average = mode != "local"  # "local": average_tokens_across_devices=False; "turns": per-turn rewards
    batch = 2 if mode == "turns" else 3
    args = config(
        out,
        loss_type="rift",
        per_device_train_batch_size=batch,
        ddp_backend="gloo",
        average_tokens_across_devices=average,
    )
    tr = trainer(model_dir, args, turns_rows() if mode == "turns" else messages_rows(REWARDS))
    logs = train_logs(tr)
    if tr.accelerator.is_main_process:
        (out / "logs.json").write_text(json.dumps({"world": tr.accelerator.num_processes, "logs": logs}))


if __name__ == "__main__":
    main()
    leave_without_teardown()  # tests/harness.py: skips the teardown where the exit abort happens
