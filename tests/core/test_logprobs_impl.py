"""token_logprobs' implementations ("torch" chunked, "triton" kernels) and their options.

Every path is checked against an unchunked float64 reference on values and gradients, with the
error budget of low precision: ``|impl - ref64| <= |ref64 rounded to the dtype - ref64| + tol``
(the gradient is the exact one rounded once). The chunk size is shrunk so that each call
crosses many chunks, runs of target rows and gathered (non-contiguous) row sets.

CUDA tests are marked ``gpu`` and skipped without CUDA. The Triton kernels also run on CPU in
Triton's interpreter when the triton package is installed (``TRITON_INTERPRET=1`` in a
subprocess); in the MS-Swift venv it is not, run
``.venvs/llamafactory/bin/python -m pytest tests/core/test_logprobs_impl.py``.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import rift_losses
from rift_losses import _torch_logprobs, logprobs

from core_reference import TOLERANCES

CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None
gpu = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA device")]


def reference(logits, labels, grad_out, ignore_index):
    """float64 log p and d(sum(grad_out * log p))/dlogits, unchunked."""
    leaf = logits.detach().double().requires_grad_()
    mask = labels != ignore_index
    lp = torch.log_softmax(leaf, -1).gather(-1, torch.where(mask, labels, 0)[..., None])[..., 0] * mask
    (grad,) = torch.autograd.grad(lp, leaf, grad_out.double())
    return lp.detach(), grad


def assert_within_budget(got, ref, dtype, tol, *, ulps=0.0):
    """|got - ref| <= |ref rounded to dtype - ref| + ulps * eps(dtype) * |ref| + tol, elementwise."""
    got, ref = got.double().cpu(), ref.double().cpu()
    budget = (ref.to(dtype).double() - ref).abs() + ulps * torch.finfo(dtype).eps * ref.abs() + tol
    excess = (got - ref).abs() - budget
    assert torch.all(excess <= 0), (
        f"max excess {excess.max().item():.3g} at {divmod(int(excess.argmax()), ref.shape[-1])}"
    )


def make_case(shape, dtype, device, ignore_index, pattern):
    *lead, V = shape
    logits = (torch.randn(*shape, dtype=torch.float64) * 3).to(dtype=dtype, device=device)
    labels = torch.randint(0, V, lead, device=device)
    flat = labels.view(-1)
    if pattern == "prefix":
        labels[..., : max(1, lead[-1] // 3)] = ignore_index
    elif pattern == "scattered":
        flat[torch.randperm(flat.numel(), device=device)[: flat.numel() // 3]] = ignore_index
    grad_out = torch.randn(lead, device=device)
    return logits, labels, grad_out


def run(logits, labels, grad_out, ignore_index, impl, *, sliced=False, inplace=False):
    """Forward + backward through token_logprobs; returns (log p, grad of the full logits)."""
    leaf = logits.clone().requires_grad_()
    # in place, the logits are a non-leaf (as a model's output is), sliced or not: the gradient
    # is written over them, through the slice's strides
    full = leaf * 1 if inplace else leaf
    src = full[:, :-1] if sliced else full
    lab = labels[:, :-1] if sliced else labels
    go = grad_out[:, :-1] if sliced else grad_out
    lp = rift_losses.token_logprobs(src, lab, ignore_index=ignore_index, impl=impl, inplace_grad=inplace)
    (grad,) = torch.autograd.grad(lp, leaf, go)
    return lp.detach(), grad, lab, go


@pytest.fixture(params=["rows", "chunks"])
def small_chunks(request, monkeypatch):
    """Either strategy of the PyTorch path ("rows": CPU worker threads, a few rows per op;
    "chunks": multi-row ops) with three rows per op, so a call crosses many ops and tasks,
    with groups of rows that are all, partly or not targets."""

    def set_rows(V):
        monkeypatch.setattr(_torch_logprobs, "_SERIAL_SOFTMAX_BYTES", 3 * 4 * V)  # 3 float32 rows per op
        monkeypatch.setattr(_torch_logprobs, "_GROUPS_PER_TASK", 2)
        monkeypatch.setattr(_torch_logprobs, "_THREAD_MIN_ELEMENTS", 0)
        if request.param == "rows":
            monkeypatch.setattr(_torch_logprobs, "_SERIAL_ELEMENTS", 40)  # elementwise ops in column pieces
        else:
            monkeypatch.setattr(_torch_logprobs, "_ROWS_DEVICES", ())
        monkeypatch.setitem(_torch_logprobs._CHUNK_ELEMENTS, "cpu", 3 * V)
        monkeypatch.setitem(_torch_logprobs._CHUNK_ELEMENTS, "cuda", 3 * V)

    return set_rows


def check_impl(impl, device, dtype, shape, ignore_index, pattern, sliced, inplace):
    logits, labels, grad_out = make_case(shape, dtype, device, ignore_index, pattern)
    lp, grad, lab, go = run(logits, labels, grad_out, ignore_index, impl, sliced=sliced, inplace=inplace)
    src = logits[:, :-1] if sliced else logits
    ref_lp, ref_grad = reference(src, lab, go, ignore_index)
    val_tol, grad_tol = TOLERANCES[dtype]
    assert lp.dtype == torch.float32 and lp.shape == lab.shape
    assert_within_budget(lp, ref_lp, torch.float32, val_tol)
    got_grad = grad[:, :-1] if sliced else grad
    assert got_grad.dtype == dtype
    assert_within_budget(got_grad, ref_grad, dtype, grad_tol)
    if sliced:
        assert torch.all(grad[:, -1] == 0)
    ignored = lab == ignore_index
    assert torch.all(lp[ignored] == 0) and torch.all(got_grad[ignored] == 0)


# ------------------------------------------------------------------------------ torch (CPU)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("pattern", ["prefix", "scattered", "none"])
@pytest.mark.parametrize("sliced", [False, True], ids=["contiguous", "sliced"])
def test_torch_path_matches_reference(small_chunks, dtype, pattern, sliced):
    shape = (3, 11, 97)
    small_chunks(shape[-1])
    check_impl("torch", "cpu", dtype, shape, 42, pattern, sliced, inplace=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("sliced", [False, True], ids=["contiguous", "sliced"])
def test_torch_path_inplace_grad_matches_reference(small_chunks, dtype, sliced):
    shape = (2, 13, 61)
    small_chunks(shape[-1])
    check_impl("torch", "cpu", dtype, shape, -100, "scattered", sliced, inplace=True)


@pytest.mark.parametrize("threads", [1, 3])
def test_default_sizes_and_thread_counts(threads, monkeypatch):
    """The real sizes (a vocabulary of a few thousand: several rows per op; above
    _SERIAL_ELEMENTS: one row per op, elementwise ops in column pieces), on 1 and 3 threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check_impl("torch", "cpu", torch.bfloat16, (2, 40, 3001), -100, "prefix", False, inplace=False)
        monkeypatch.setattr(_torch_logprobs, "_THREAD_MIN_ELEMENTS", 0)
        check_impl(
            "torch",
            "cpu",
            torch.float32,
            (2, 3, _torch_logprobs._SERIAL_ELEMENTS + 5),
            -100,
            "scattered",
            True,
            inplace=False,
        )
        check_impl(
            "torch",
            "cpu",
            torch.bfloat16,
            (2, 3, 2 * _torch_logprobs._SERIAL_ELEMENTS + 5),
            -100,
            "prefix",
            False,
            inplace=True,
        )
    finally:
        torch.set_num_threads(before)


def test_an_error_in_a_worker_thread_reaches_the_caller(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom in a worker")

    monkeypatch.setattr(torch, "log_softmax", broken)
    with pytest.raises(RuntimeError, match="boom in a worker"):
        rift_losses.token_logprobs(torch.randn(4, 64, 50), torch.randint(0, 50, (4, 64)))


def test_float64_logits_accumulate_in_float64():
    logits, labels, grad_out = make_case((2, 5, 33), torch.float64, "cpu", -100, "prefix")
    lp, grad, _, _ = run(logits, labels, grad_out, -100, "torch")
    ref_lp, ref_grad = reference(logits, labels, grad_out, -100)
    torch.testing.assert_close(lp.double(), ref_lp, atol=1e-6, rtol=0)  # the output is float32
    torch.testing.assert_close(grad, ref_grad, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("sliced", [False, True], ids=["contiguous", "sliced"])
def test_float32_logits_are_never_written_without_inplace(small_chunks, sliced):
    small_chunks(50)
    logits = torch.randn(3, 9, 50, requires_grad=True)
    before = logits.detach().clone()
    labels = torch.randint(0, 50, (3, 9))
    labels[1, ::2] = -100
    src, lab = (logits[:, :-1], labels[:, :-1]) if sliced else (logits, labels)
    lp = rift_losses.token_logprobs(src, lab)
    lp.sum().backward()
    assert torch.equal(logits.detach(), before)
    assert logits.grad.data_ptr() != logits.data_ptr()


def test_inplace_grad_reuses_the_logits_buffer_and_changes_no_gradient():
    hidden = torch.randn(4, 6, 16, requires_grad=True)
    weight = torch.randn(40, 16)
    labels = torch.randint(0, 40, (4, 6))
    labels[:, :2] = -100
    grads, buffers = [], []
    for inplace in (False, True):
        logits = hidden @ weight.T
        buffers.append(logits)
        lp = rift_losses.token_logprobs(logits, labels, inplace_grad=inplace)
        (g,) = torch.autograd.grad(lp.sum(), hidden)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1])
    # out of place leaves the logits alone; in place their buffer now holds their gradient
    torch.testing.assert_close(buffers[0], (hidden @ weight.T).detach())
    assert torch.all(buffers[1][:, :2] == 0)  # ignored rows: zero gradient written over them
    torch.testing.assert_close(buffers[1].detach().sum(-1), torch.zeros(4, 6), atol=1e-5, rtol=0)


def test_inplace_grad_with_a_later_user_of_the_logits_fails_loudly():
    """A backward that needs the logits after ours overwrote them raises, not a wrong gradient."""
    leaf = torch.randn(2, 5, 30, requires_grad=True)
    logits = leaf * 1
    labels = torch.randint(0, 30, (2, 5))
    other = (logits**2).sum()  # saves `logits` for its backward, which runs after ours
    loss = rift_losses.token_logprobs(logits, labels, inplace_grad=True).sum() + other
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_all_ignored_gives_zeros_connected_to_the_graph():
    logits = torch.randn(2, 4, 25, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.full((2, 4), -100)
    lp = rift_losses.token_logprobs(logits, labels)
    assert lp.requires_grad and torch.all(lp == 0)
    lp.sum().backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)
    loss = rift_losses.rift_loss(logits, labels, torch.tensor([1.0, -0.2]))
    assert loss.requires_grad and float(loss.detach()) == 0.0


def test_ignored_rows_get_exact_zeros_whatever_their_logits():
    logits = torch.randn(2, 6, 20)
    logits[0, 1] = float("inf")
    logits[1, 3] = float("nan")
    logits.requires_grad_()
    labels = torch.randint(0, 20, (2, 6))
    labels[0, 1] = labels[1, 3] = -100
    lp = rift_losses.token_logprobs(logits, labels)
    lp.sum().backward()
    assert torch.all(torch.isfinite(lp)) and torch.all(torch.isfinite(logits.grad))
    assert torch.all(logits.grad[0, 1] == 0) and torch.all(logits.grad[1, 3] == 0)


def test_empty_batch():
    logits = torch.randn(0, 7, 11, requires_grad=True)
    lp = rift_losses.token_logprobs(logits, torch.zeros(0, 7, dtype=torch.long))
    assert lp.shape == (0, 7)
    lp.sum().backward()
    assert logits.grad.shape == logits.shape


def test_options_are_validated():
    logits, labels = torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="impl must be one of 'auto', 'torch', 'triton', got 'cuda'"):
        rift_losses.token_logprobs(logits, labels, impl="cuda")
    with pytest.raises(TypeError, match="inplace_grad must be a bool, got 1"):
        rift_losses.token_logprobs(logits, labels, inplace_grad=1)
    if os.environ.get("TRITON_INTERPRET") != "1":
        # without the triton package or without CUDA logits, impl="triton" is refused by name
        with pytest.raises(ValueError, match="impl must be 'auto' or 'torch'|logits must be on a CUDA device"):
            rift_losses.token_logprobs(logits, labels, impl="triton")
    assert logprobs.IMPLS == ("auto", "torch", "triton")


def test_auto_is_torch_on_cpu():
    assert logprobs._resolve_impl("auto", torch.zeros(1, 3)) == "torch"


# ------------------------------------------------------------------ triton, in the interpreter

_INTERPRETED = textwrap.dedent(
    """
    import sys
    import torch
    sys.path.insert(0, {test_dir!r})
    import test_logprobs_impl as t
    from rift_losses import logprobs
    assert logprobs._resolve_impl("triton", torch.zeros(1, 3)) == "triton"
    torch.manual_seed(0)
    cases = 0
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        # the interpreter casts float32 to bfloat16 by truncation (GPUs round to nearest): 1 ulp
        ulps = 1.0 if dtype == torch.bfloat16 else 0.0
        for shape, pattern, sliced, inplace in [
            ((2, 5, 37), "prefix", False, False),
            ((3, 4, 5000), "scattered", True, False),
            ((2, 6, 4097), "scattered", True, True),
        ]:
            logits, labels, grad_out = t.make_case(shape, dtype, "cpu", 42, pattern)
            lp, grad, lab, go = t.run(logits, labels, grad_out, 42, "triton", sliced=sliced, inplace=inplace)
            src = logits[:, :-1] if sliced else logits
            ref_lp, ref_grad = t.reference(src, lab, go, 42)
            val_tol, grad_tol = t.TOLERANCES[dtype]
            t.assert_within_budget(lp, ref_lp, torch.float32, val_tol)
            t.assert_within_budget(grad[:, :-1] if sliced else grad, ref_grad, dtype, grad_tol, ulps=ulps)
            assert torch.all(lp[lab == 42] == 0)
            cases += 1
    print("interpreted cases", cases)
    """
)


@pytest.mark.skipif(not HAS_TRITON, reason="the triton package is not installed in this environment")
def test_triton_kernels_in_the_interpreter():
    test_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", _INTERPRETED.format(test_dir=test_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "interpreted cases 9" in proc.stdout


# ---------------------------------------------------------------------------------- CUDA


def _cuda_only(fn):
    for mark in reversed(gpu):
        fn = mark(fn)
    return fn


@_cuda_only
@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize(
    "shape,pattern,sliced,inplace",
    [
        ((2, 7, 1000), "prefix", False, False),
        ((3, 9, 4099), "scattered", True, False),
        ((2, 5, 151936), "scattered", False, True),
        ((2, 8, 8192), "none", True, True),
    ],
    ids=str,
)
def test_cuda_paths_match_reference(impl, dtype, shape, pattern, sliced, inplace):
    if impl == "triton" and not HAS_TRITON:
        pytest.skip("the triton package is not installed")
    check_impl(impl, "cuda", dtype, shape, 42, pattern, sliced, inplace)


@_cuda_only
def test_auto_is_triton_on_cuda_when_installed():
    want = "triton" if HAS_TRITON else "torch"
    assert logprobs._resolve_impl("auto", torch.zeros(1, 3, device="cuda")) == want
    assert logprobs._resolve_impl("auto", torch.zeros(1, 3, device="cuda", dtype=torch.float64)) == "torch"


@_cuda_only
@pytest.mark.parametrize("impl", ["auto", "torch"])
def test_cuda_hot_path_has_no_host_sync(impl):
    logits = torch.randn(4, 64, 3000, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, 3000, (4, 64), device="cuda")
    labels[:, :10] = -100
    rewards = torch.tensor([1.0, -0.2, 1.0, -0.2], device="cuda")
    rift_losses.rift_loss(logits, labels, rewards).backward()  # warm-up: compile, allocate
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        lp = rift_losses.token_logprobs(logits, labels, impl=impl)
        (g,) = torch.autograd.grad(lp.sum(), logits)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert g.shape == logits.shape


@_cuda_only
@pytest.mark.parametrize("inplace", [False, True])
def test_cuda_peak_memory_is_the_gradient_only(inplace):
    N, V = 2048, 32000
    logits = torch.randn(N, V, device="cuda", dtype=torch.bfloat16)
    labels = torch.randint(0, V, (N,), device="cuda")
    leaf = torch.zeros((), device="cuda", requires_grad=True)
    src = logits + leaf.to(logits.dtype)  # a non-leaf, like a model's output
    lp = rift_losses.token_logprobs(src, labels, inplace_grad=inplace)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    lp.sum().backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    nbytes = logits.numel() * logits.element_size()
    assert extra <= (0.05 if inplace else 1.05) * nbytes, (extra, nbytes)


@_cuda_only
def test_cuda_offsets_beyond_2_to_the_31():
    """N * V > 2**31 elements: the last rows are read and written at 64-bit offsets."""
    N, V = 14200, 151936  # 2.16e9 logits, 4.3 GB in bfloat16
    logits = torch.empty(N, V, device="cuda", dtype=torch.bfloat16).normal_(0, 3)
    labels = torch.randint(0, V, (N,), device="cuda")
    logits.requires_grad_()
    lp = rift_losses.token_logprobs(logits, labels)
    (g,) = torch.autograd.grad(lp.sum(), logits)
    rows = torch.tensor([0, N // 2, N - 2, N - 1], device="cuda")
    ref_lp, ref_grad = reference(logits.detach()[rows], labels[rows], torch.ones(4, device="cuda"), -100)
    assert_within_budget(lp[rows], ref_lp, torch.float32, TOLERANCES[torch.float32][0])
    assert_within_budget(g[rows], ref_grad, torch.bfloat16, TOLERANCES[torch.bfloat16][1])
