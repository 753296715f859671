"""A RiftSFTTrainer run for the data-parallel test: ``torchrun --nproc_per_node 2 ddp_train.py MODEL OUT [local]``.

Each rank trains batch 3 (2 gloo ranks = batch 6 per step); rank 0 writes the per-step logs
to ``OUT/logs.json``.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from trl_helpers import REWARDS, config, messages_rows, train_logs, trainer  # noqa: E402


def main():
    model_dir, out = sys.argv[1], Path(sys.argv[2])
    average = sys.argv[3] != "local" if len(sys.argv) > 3 else True  # "local": average_tokens_across_devices=False
    args = config(
        out, loss_type="rift", per_device_train_batch_size=3, ddp_backend="gloo", average_tokens_across_devices=average
    )
    tr = trainer(model_dir, args, messages_rows(REWARDS))
    logs = train_logs(tr)
    if tr.accelerator.is_main_process:
        (out / "logs.json").write_text(json.dumps({"world": tr.accelerator.num_processes, "logs": logs}))


if __name__ == "__main__":
    main()
