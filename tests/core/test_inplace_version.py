"""``inplace_grad=True`` when something else saved the logits for its own backward.

The in-place backward overwrites the logits with their gradient. A node that saved the logits and
runs its backward after ours would read the gradient instead: autograd's version counter must turn
that into an error, on both paths (the Triton kernel's raw writes bump it explicitly). A node that
runs its backward before ours (created after ours in the forward) reads intact values and the
gradients equal the out-of-place ones.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

HAS_TRITON = importlib.util.find_spec("triton") is not None

_CASES = textwrap.dedent(
    """
    import torch, rift_losses

    def head(seed):
        g = torch.Generator().manual_seed(seed)
        h = torch.randn(2, 5, 8, generator=g, requires_grad=True)
        w = torch.randn(11, 8, generator=g, requires_grad=True)
        labels = torch.randint(0, 11, (2, 5), generator=g)
        labels[0, :2] = -100
        return h, w, labels, torch.tensor([1.0, -0.2])

    def run(impl, inplace, other_first):
        h, w, labels, r = head(0)
        logits = h @ w.T
        if other_first:  # saved the logits before our node: its backward runs after ours
            other = (logits * logits).sum() * 1e-2
            loss = rift_losses.rift_loss(logits, labels, r, impl=impl, inplace_grad=inplace) + other
        else:
            loss = rift_losses.rift_loss(logits, labels, r, impl=impl, inplace_grad=inplace)
            loss = loss + (logits * logits).sum() * 1e-2
        loss.backward()
        return h.grad, w.grad

    def check(impl):
        try:
            run(impl, True, other_first=True)
        except RuntimeError as exc:
            assert "modified by an inplace operation" in str(exc), exc
        else:
            raise AssertionError(impl + ": a stale read of the overwritten logits went unnoticed")
        for a, b in zip(run(impl, True, other_first=False), run(impl, False, other_first=False)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        print(impl, "ok")
    """
)


def test_torch_path_stale_reader_fails_loudly_and_earlier_reader_is_exact():
    namespace = {}
    exec(_CASES, namespace)
    namespace["check"]("torch")


@pytest.mark.skipif(not HAS_TRITON, reason="the triton package is not installed in this environment")
def test_triton_path_stale_reader_fails_loudly_and_earlier_reader_is_exact():
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", _CASES + "\ncheck('triton')\n"], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "triton ok" in proc.stdout
