"""The data-parallel test's run: ``torchrun --nproc_per_node 2 ddp_grpo_train.py MODEL OUT EXTRA_EOS``.

Each rank trains batch 4 (2 gloo ranks = one generation batch of 2 prompts x 4 greedy completions);
rank 0 writes the weights after the one step and the logs to ``OUT/``.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/harness.py

import torch  # noqa: E402
from grpo_helpers import GREEDY, by_prompt, grpo_config, prompt_rows, spy_trainer  # noqa: E402
from harness import leave_without_teardown  # noqa: E402


def main():
    model_dir, out, extra_eos = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    args = grpo_config(out, per_device_train_batch_size=4, ddp_backend="gloo", generation_kwargs=GREEDY)
    tr = spy_trainer(model_dir, args, [by_prompt], prompt_rows(2), extra_eos=extra_eos)
    tr.train()
    logs = [h for h in tr.state.log_history if "loss" in h and "train_runtime" not in h]
    if tr.accelerator.is_main_process:
        torch.save({k: v.detach().clone() for k, v in tr.model.state_dict().items()}, out / "weights.pt")
        (out / "logs.json").write_text(json.dumps({"world": tr.accelerator.num_processes, "logs": logs}))


if __name__ == "__main__":
    main()
    leave_without_teardown()  # tests/harness.py: skips the teardown where the exit abort happens
