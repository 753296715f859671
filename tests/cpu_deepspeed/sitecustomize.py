"""CPU-only scaffolding of the DeepSpeed tests (tests/*/test_*_deepspeed.py); not part of the package.

Why it exists: the hosts' DeepSpeed route assumes an accelerator. On a machine without a GPU,
accelerate's state sets ``num_processes=1`` (no GPU backend) and DeepSpeed then fails a
batch-size assertion (2 ranks x micro-batch x GA != train_batch_size). Creating the process
group first, with gloo, and marking DeepSpeed as in use makes the real Trainer -> accelerate ->
DeepSpeedEngine path start on CPU, over gloo (DeepSpeed's CPU accelerator falls back to
torch.distributed when Intel oneCCL is absent). The tests then pass
``accelerator_config={"use_configured_state": True}`` so the Trainer reuses this state.

How it is used: a test puts this folder on ``PYTHONPATH`` and sets ``RIFT_TEST_CPU_DEEPSPEED=1``;
it does nothing in any other process, nor outside a torchrun worker (``LOCAL_RANK`` unset: the
host's CLI front process). Nothing of the code under test (adapter, host, DeepSpeed) is replaced.
"""

import os

if os.environ.get("RIFT_TEST_CPU_DEEPSPEED") == "1" and "LOCAL_RANK" in os.environ:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    from accelerate import PartialState

    PartialState(backend="gloo")
