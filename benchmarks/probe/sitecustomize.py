"""Benchmark probe: times every ``transformers.Trainer.training_step`` of a host CLI run.

Active only when ``RIFT_BENCH_PROBE`` names an output path (``benchmarks/hosts.py`` puts this
directory on ``PYTHONPATH`` for its runs, nothing else does). Wraps ``Trainer.training_step``
(MS-Swift's and LLaMA-Factory's trainers both inherit it; so does TRL's) and, at exit, writes
``<RIFT_BENCH_PROBE>.<pid>.json`` with one record per step: wall time (CUDA-synchronized on a
GPU), the batch's shape and target tokens, and on CUDA the memory allocated when the step began
and the peak allocated during it (``torch.cuda.max_memory_allocated``, reset before each step).
A process that ran no training step writes nothing.

It also imports ``_rift_losses_hook`` (from the checkout, on the same ``PYTHONPATH``): a host run
from a ``pip install --target`` folder or a Python without rift-losses installed has no
``rift_losses.pth`` to do it, and in a venv that has one the import is a no-op.
"""

import os

_OUT = os.environ.get("RIFT_BENCH_PROBE")


def _install():
    import atexit
    import json
    import time

    import torch
    import transformers

    records = []
    original = transformers.Trainer.training_step

    def training_step(self, model, inputs, *args, **kwargs):
        cuda = torch.cuda.is_available() and next(model.parameters()).is_cuda
        labels = inputs.get("labels") if hasattr(inputs, "get") else None
        ids = inputs.get("input_ids") if hasattr(inputs, "get") else None
        record = {
            "input_shape": list(ids.shape) if ids is not None else None,
            "target_tokens": int((labels[..., 1:] != -100).sum()) if labels is not None else None,
        }
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            record["cuda_allocated_before"] = torch.cuda.memory_allocated()
        start = time.perf_counter()
        loss = original(self, model, inputs, *args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
            record["cuda_peak"] = torch.cuda.max_memory_allocated()
            record["device"] = torch.cuda.get_device_name()
        record["seconds"] = time.perf_counter() - start
        record["loss"] = float(loss.detach().float())
        records.append(record)
        return loss

    def write():
        if records:
            with open(f"{_OUT}.{os.getpid()}.json", "w") as f:
                json.dump({"steps": records}, f)

    transformers.Trainer.training_step = training_step
    atexit.register(write)


if _OUT:
    import _rift_losses_hook  # noqa: F401  (registers the adapters when the host is imported)

    _install()
