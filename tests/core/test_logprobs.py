"""token_logprobs, shift_labels and the memory/numerics contract of the primitive."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import rift_losses


def reference_logprobs(logits, labels, ignore_index=-100):
    out = torch.zeros(labels.shape, dtype=torch.float64)
    flat_logits = logits.reshape(-1, logits.shape[-1]).double()
    for i, y in enumerate(labels.reshape(-1).tolist()):
        if y != ignore_index:
            row = flat_logits[i]
            out.view(-1)[i] = row[y] - torch.logsumexp(row, 0)
    return out


@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 11), (2, 2, 3, 17)], ids=str)
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_values_dtype_shape_and_zeros_at_ignored(shape, ignore_index):
    logits = torch.randn(*shape) * 4
    labels = torch.randint(0, shape[-1], shape[:-1])
    labels.view(-1)[::3] = ignore_index
    out = rift_losses.token_logprobs(logits, labels, ignore_index=ignore_index)
    assert out.dtype == torch.float32 and out.shape == labels.shape
    torch.testing.assert_close(out.double(), reference_logprobs(logits, labels, ignore_index), atol=1e-5, rtol=1e-6)
    assert torch.all(out[labels == ignore_index] == 0)


def test_gradient_equals_cross_entropy_gradient():
    logits = torch.randn(4, 6, 29, requires_grad=True)
    labels = torch.randint(0, 29, (4, 6))
    labels[0, :3] = -100
    (g,) = torch.autograd.grad(-rift_losses.token_logprobs(logits, labels).sum(), logits)
    (ref,) = torch.autograd.grad(F.cross_entropy(logits.view(-1, 29), labels.view(-1), reduction="sum"), logits)
    torch.testing.assert_close(g, ref, atol=1e-6, rtol=1e-5)
    assert torch.all(g[0, :3] == 0)


def test_low_precision_gradient_dtype_and_accuracy():
    for dtype in (torch.bfloat16, torch.float16):
        logits = (torch.randn(3, 5, 64) * 3).to(dtype).requires_grad_()
        labels = torch.randint(0, 64, (3, 5))
        (g,) = torch.autograd.grad(rift_losses.token_logprobs(logits, labels).sum(), logits)
        assert g.dtype == dtype
        ref = torch.log_softmax(logits.detach().double().requires_grad_(), -1)
        leaf = logits.detach().double().requires_grad_()
        (ref,) = torch.autograd.grad(torch.log_softmax(leaf, -1).gather(-1, labels[..., None]).sum(), leaf)
        torch.testing.assert_close(
            g.double(), ref.to(dtype).double(), atol=1e-3 if dtype == torch.bfloat16 else 1e-4, rtol=0
        )


def test_sliced_logits_match_contiguous_and_hf_shift():
    """logits[:, :-1] (non-contiguous) with labels[:, 1:] equals shift_labels on full logits."""
    logits = torch.randn(3, 8, 21, requires_grad=True)
    hf_labels = torch.randint(0, 21, (3, 8))
    hf_labels[:, :2] = -100
    sliced = rift_losses.token_logprobs(logits[:, :-1], hf_labels[:, 1:])
    shifted = rift_losses.token_logprobs(logits, rift_losses.shift_labels(hf_labels))
    torch.testing.assert_close(shifted[:, :-1], sliced)
    assert torch.all(shifted[:, -1] == 0)
    (g1,) = torch.autograd.grad(sliced.sum(), logits)
    (g2,) = torch.autograd.grad(shifted.sum(), logits)
    torch.testing.assert_close(g1, g2)
    # the causal-LM convention: logits[:, t] predicts hf_labels[:, t + 1]
    want = torch.log_softmax(logits[0, 3].double(), -1)[hf_labels[0, 4]]
    torch.testing.assert_close(shifted[0, 3].double(), want, atol=1e-6, rtol=1e-6)


def test_shift_labels_fills_and_keeps_dtype():
    labels = torch.tensor([[5, 6, 7], [1, 2, 3]])
    assert rift_losses.shift_labels(labels).tolist() == [[6, 7, -100], [2, 3, -100]]
    rewards = torch.tensor([[0.5, 1.0, 2.0]])
    out = rift_losses.shift_labels(rewards, ignore_index=0.0)
    assert out.dtype == torch.float32 and out.tolist() == [[1.0, 2.0, 0.0]]
    assert labels.tolist() == [[5, 6, 7], [1, 2, 3]]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_extreme_logits_stay_finite(dtype):
    big = 1e4 if dtype != torch.float16 else 6e4
    logits = torch.zeros(2, 4, 50, dtype=dtype)
    logits[..., ::2] = big
    logits[..., 1::2] = -big
    logits.requires_grad_()
    labels = torch.tensor([[0, 1, 2, 3], [49, 48, -100, 10]])
    rewards = torch.tensor([1.0, -0.2])
    for fn in (rift_losses.rift_loss, rift_losses.naive_loss):
        loss = fn(logits, labels, rewards)
        (g,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and torch.all(torch.isfinite(g))
    lp = rift_losses.token_logprobs(logits, labels)
    assert torch.all(torch.isfinite(lp))
    assert lp[0, 1] < -1e4  # a target at -big against competitors at +big: hugely negative, finite


class _Allocations(TorchDispatchMode):
    """Records every new storage an aten op returns (views and in-place results excluded)."""

    def __init__(self, known):
        super().__init__()
        self.known = set(known)
        self.new = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                ptr = o.untyped_storage().data_ptr()
                if ptr not in self.known:
                    self.known.add(ptr)
                    self.new.append((str(func), o.dtype, o.untyped_storage().nbytes()))
        return out


def test_no_float32_copy_of_the_logits_and_only_the_gradient_is_large():
    """Forward + backward allocate one logits-sized buffer (the bf16 gradient) and otherwise
    only chunk-sized float32 work space: never an (N, V) float32 copy."""
    B, T, V = 32, 64, 8000
    logits = torch.randn(B, T, V).bfloat16().requires_grad_()
    labels = torch.randint(0, V, (B, T))
    rewards = torch.rand(B) - 0.5
    mode = _Allocations([logits.untyped_storage().data_ptr()])
    with mode:
        rift_losses.rift_loss(logits, labels, rewards).backward()
    logits_bytes = logits.numel() * logits.element_size()
    fp32_copy_bytes = logits.numel() * 4
    large = [a for a in mode.new if a[2] >= fp32_copy_bytes // 4]
    assert len(large) == 1 and large[0][1] == torch.bfloat16 and large[0][2] == logits_bytes, large
    assert logits.grad is not None and logits.grad.untyped_storage().nbytes() == logits_bytes
