"""Peak memory of token_logprobs on CPU as the kernel counts it (resident set), not as ops report it.

A TorchDispatchMode sees every tensor an op returns, but not the temporaries an op makes inside
(on CPU, ``scatter_`` into a bfloat16 tensor upcasts all of it to float32, for one). Here one
fresh subprocess runs forward + backward per case with glibc's mmap threshold fixed at 64 KiB,
so that every allocation of 64 KiB or more is its own mapping, returned to the system when freed:
the resident set follows the live tensors. Each case runs once to warm up, then the kernel's
RSS high-water mark is reset (``/proc/self/clear_refs``) and read after a second run.
torch's cross-entropy is measured the same way, to show the method sees internal allocations.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

_CHILD = textwrap.dedent(
    """
    import json
    import torch
    import torch.nn.functional as F
    import rift_losses
    from rift_losses import _torch_logprobs

    def kib(field):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))

    def peak_extra(fn):
        fn()
        base = kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        fn()
        return (kib("VmHWM") - base) * 1024

    N, V = 1024, 32000
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        logits = torch.randn(N, V).to(dtype)
        labels = torch.randint(0, V, (N,))
        labels[::4] = -100
        out[str(dtype), "bytes"] = logits.numel() * logits.element_size()

        def ours():
            x = logits.detach().requires_grad_()
            (g,) = torch.autograd.grad(rift_losses.token_logprobs(x, labels, impl="torch").sum(), x)

        def ce():
            x = logits.detach().requires_grad_()
            (g,) = torch.autograd.grad(F.cross_entropy(x, labels, reduction="none").sum(), x)

        for strategy in ("rows", "chunks"):
            _torch_logprobs._ROWS_DEVICES = ("cpu",) if strategy == "rows" else ()
            out[str(dtype), strategy, "default"] = peak_extra(ours)
        _torch_logprobs._ROWS_DEVICES = ("cpu",)
        # in place: the buffer to be overwritten is made before the high-water mark is reset
        work = logits.clone().requires_grad_()

        def inplace():
            lp = rift_losses.token_logprobs(work, labels, impl="torch", inplace_grad=True)
            (g,) = torch.autograd.grad(lp.sum(), work)
            assert g.data_ptr() == work.data_ptr()

        out[str(dtype), "rows", "inplace"] = peak_extra(inplace)
        # sliced logits (the causal shift) are read where they lie: no copy in forward
        sliced = logits.view(8, N // 8, V)[:, :-1]
        sliced_labels = labels.view(8, N // 8)[:, :-1]
        out[str(dtype), "sliced", "forward"] = peak_extra(lambda: rift_losses.token_logprobs(sliced, sliced_labels))
        out[str(dtype), "ce"] = peak_extra(ce)
    print(json.dumps({"|".join(k): v for k, v in out.items()}))
    """
)


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs")
def test_peak_resident_memory_is_the_gradient_only():
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    slack = 16 << 20  # scratch rows, index tensors, allocator pages, thread stacks
    for dtype in ("torch.bfloat16", "torch.float32"):
        nbytes = got[f"{dtype}|bytes"]
        report = {k: round(v / nbytes, 3) for k, v in got.items() if k.startswith(dtype) and not k.endswith("bytes")}
        # the method sees internal temporaries: CE none holds log-softmax, its gradient and NLL's
        assert got[f"{dtype}|ce"] >= 2.5 * nbytes, report
        for strategy in ("rows", "chunks"):
            assert got[f"{dtype}|{strategy}|default"] <= nbytes + slack, report  # the gradient only
        assert got[f"{dtype}|rows|inplace"] <= slack, report  # nothing logits-sized at all
        assert got[f"{dtype}|sliced|forward"] <= slack, report
