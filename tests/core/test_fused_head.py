"""The fused LM head + loss against the float64 loop of core_reference.py and the materialized path.

Values and the gradients of all three inputs (hidden states, head weight, bias); float32,
bfloat16 and float16 under the error budget ``|impl - ref64| <= |same math in dtype - ref64| + tol``;
odd shapes, chunk sizes that do not divide the rows, ``ignore_index=42``, tied embeddings,
masked rows holding NaN, every option of ``logprob_loss``.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import rift_losses
from rift_losses import fused_loss, fused_token_logprobs
from rift_losses.fused_head import default_chunk_size

from core_reference import TOLERANCES, reference_loss

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# (B, T, H, V): a single token, odd sizes, a vocabulary of 1000
SHAPES = [(1, 1, 3, 2), (2, 5, 7, 11), (3, 7, 5, 33), (2, 4, 8, 1000)]
# (ignore_index, per-token rewards, bias, chunk_size)
VARIANTS = [(-100, False, True, 1), (42, True, False, 3), (-100, True, True, None)]


def make_head_batch(shape, dtype, *, ignore_index=-100, per_token=False, bias=True):
    B, T, H, V = shape
    hidden = torch.randn(B, T, H).to(dtype)
    weight = (torch.randn(V, H) * (2.0 / H**0.5)).to(dtype)
    b = (torch.randn(V) * 0.5).to(dtype) if bias else None
    labels = torch.randint(0, V, (B, T))
    drop = torch.rand(B, T) < 0.3
    drop[0, 0] = B * T > 1
    labels[drop] = ignore_index
    if per_token:
        rewards = torch.empty(B, T).uniform_(-1, 1)
    else:
        rewards = torch.tensor([1.0, -0.2, 0.5, -0.8, 0.0][:B] + [1.0] * max(0, B - 5))
    return hidden, weight, b, labels, rewards


def value_and_grads(fn, tensors):
    """``fn(*leaves)`` and the gradient of every non-None input, in float64."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in tensors]
    value = fn(*leaves)
    present = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(value, present)
    return value.detach().double(), [g.double() for g in grads]


def dtype_math(h, w, b, labels, rewards, *, loss, ignore_index):
    """The loss computed naively *in the input dtype* from materialized logits."""
    logits = F.linear(h, w, b)
    mask = labels != ignore_index
    logp = torch.log_softmax(logits, dim=-1).gather(-1, torch.where(mask, labels, 0)[..., None])[..., 0]
    r = (rewards if rewards.dim() == 2 else rewards[:, None].expand_as(logp)).to(logits.dtype)
    terms = -r * logp if loss == "naive" else -r * torch.where(r > 0, logp, logp.exp())
    return (terms * mask).sum() / mask.sum().clamp(min=1)


@pytest.mark.parametrize("loss", ["naive", "rift"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS, ids=["bias-chunk1", "ignore42-per_token-chunk3", "default_chunk"])
def test_values_and_all_gradients_match_float64_reference(loss, dtype, shape, variant):
    ignore_index, per_token, bias, chunk_size = variant
    hidden, weight, b, labels, rewards = make_head_batch(
        shape, dtype, ignore_index=ignore_index, per_token=per_token, bias=bias
    )
    inputs = (hidden, weight, b)

    def fused(h, w, bb):
        return fused_loss(h, w, labels, rewards, bias=bb, loss=loss, ignore_index=ignore_index, chunk_size=chunk_size)

    def reference(h, w, bb):
        return reference_loss(F.linear(h, w, bb), labels, rewards, loss=loss, ignore_index=ignore_index)

    value, grads = value_and_grads(fused, inputs)
    ref_value, ref_grads = value_and_grads(reference, [t.double() if t is not None else None for t in inputs])
    loss_tol, grad_tol = TOLERANCES[dtype]
    if dtype == torch.float32:
        torch.testing.assert_close(value, ref_value, atol=loss_tol, rtol=1e-5)
        for g, ref in zip(grads, ref_grads):
            torch.testing.assert_close(g, ref, atol=1e-5, rtol=1e-4)
        return
    # Low precision: the logits themselves are rounded to the dtype (as in the model's own head),
    # so the budget is the same math done in that dtype from the materialized logits.
    low_value, low_grads = value_and_grads(
        lambda h, w, bb: dtype_math(h, w, bb, labels, rewards, loss=loss, ignore_index=ignore_index), inputs
    )
    assert (value - ref_value).abs() <= (low_value - ref_value).abs() + loss_tol
    # Gradients: the budget plus one rounding to the dtype at the gradient's largest magnitude (the
    # weight's gradient is a float32 sum over chunks rounded once; the dtype math rounds it differently).
    eps = torch.finfo(dtype).eps
    for g, low, ref in zip(grads, low_grads, ref_grads):
        budget = (low - ref).abs().max() + eps * ref.abs().max() + grad_tol
        assert (g - ref).abs().max() <= budget, ((g - ref).abs().max(), budget)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_equals_the_materialized_path(dtype, chunk_size):
    """The fused head gives the value and gradients of ``rift_loss(F.linear(h, W, b), ...)``."""
    hidden, weight, b, labels, rewards = make_head_batch((3, 9, 16, 257), dtype)
    inputs = (hidden, weight, b)
    value, grads = value_and_grads(
        lambda h, w, bb: fused_loss(h, w, labels, rewards, bias=bb, chunk_size=chunk_size), inputs
    )
    ref_value, ref_grads = value_and_grads(
        lambda h, w, bb: rift_losses.rift_loss(F.linear(h, w, bb), labels, rewards), inputs
    )
    torch.testing.assert_close(value, ref_value, atol=1e-6, rtol=1e-6)
    # hidden: per row the same math; weight and bias: a chunked sum (float32 accumulation) against one matmul
    atol = {torch.float32: 1e-6, torch.bfloat16: 2e-3, torch.float16: 2e-4}[dtype]
    for g, ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, ref, atol=atol, rtol=1e-2 if dtype != torch.float32 else 1e-5)


def test_chunk_size_does_not_change_float32_results():
    hidden, weight, b, labels, rewards = make_head_batch((2, 11, 8, 97), torch.float32)
    results = [
        value_and_grads(
            lambda h, w, bb, c=c: fused_loss(h, w, labels, rewards, bias=bb, chunk_size=c), (hidden, weight, b)
        )
        for c in (1, 5, 22, None)
    ]
    for value, grads in results[1:]:
        torch.testing.assert_close(value, results[0][0], atol=1e-6, rtol=0)
        for g, g0 in zip(grads, results[0][1]):
            torch.testing.assert_close(g, g0, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_every_loss_option_equals_the_materialized_path(level, reduction):
    hidden, weight, b, labels, rewards = make_head_batch((4, 6, 8, 50), torch.float32)
    opts = {"reduction": reduction, "level": level, "num_items_in_batch": 37, "return_stats": True}
    h1 = hidden.clone().requires_grad_()
    w1 = weight.clone().requires_grad_()
    value, stats = fused_loss(h1, w1, labels, rewards, bias=b, chunk_size=5, **opts)
    h2 = hidden.clone().requires_grad_()
    w2 = weight.clone().requires_grad_()
    ref, ref_stats = rift_losses.rift_loss(F.linear(h2, w2, b), labels, rewards, **opts)
    torch.testing.assert_close(value, ref, atol=1e-6, rtol=1e-6)
    for field in rift_losses.LossStats._fields:
        torch.testing.assert_close(
            getattr(stats, field).double(), getattr(ref_stats, field).double(), atol=1e-6, rtol=0
        )
    value.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(h1.grad, h2.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w1.grad, w2.grad, atol=1e-6, rtol=1e-5)


def test_token_logprobs_equal_token_logprobs_of_the_logits():
    hidden, weight, b, labels, _ = make_head_batch((2, 7, 6, 40), torch.float32, ignore_index=42)
    lp = fused_token_logprobs(hidden, weight, labels, bias=b, ignore_index=42, chunk_size=3)
    ref = rift_losses.token_logprobs(F.linear(hidden, weight, b), labels, ignore_index=42)
    assert lp.dtype == torch.float32 and lp.shape == labels.shape
    torch.testing.assert_close(lp, ref, atol=1e-6, rtol=1e-6)
    assert torch.all(lp[labels == 42] == 0)


def test_flat_rows_with_per_token_rewards():
    hidden, weight, b, labels, _ = make_head_batch((1, 13, 6, 30), torch.float32)
    rewards = torch.empty(13).uniform_(-1, 1)
    value = fused_loss(hidden[0], weight, labels[0], rewards, bias=b, chunk_size=4)
    ref = rift_losses.rift_loss(F.linear(hidden[0], weight, b), labels[0], rewards)
    torch.testing.assert_close(value, ref, atol=1e-6, rtol=1e-6)


def test_tied_embeddings_accumulate_both_gradients():
    """A head tied to the input embedding: the head's gradient adds to the embedding's, as with logits."""
    V, H = 37, 8
    ids = torch.randint(0, V, (2, 9))
    labels = rift_losses.shift_labels(ids)
    rewards = torch.tensor([1.0, -0.5])
    grads = []
    for fused in (True, False):
        torch.manual_seed(7)
        emb = torch.nn.Embedding(V, H)
        proj = torch.nn.Linear(H, H)
        hidden = torch.tanh(proj(emb(ids)))
        if fused:
            loss = fused_loss(hidden, emb.weight, labels, rewards, chunk_size=4)
        else:
            loss = rift_losses.rift_loss(F.linear(hidden, emb.weight), labels, rewards)
        loss.backward()
        grads.append((loss.detach(), emb.weight.grad.clone(), proj.weight.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_ignored_rows_are_never_projected_and_get_exact_zero_gradients():
    """NaN hidden states at ignored positions reach neither the loss nor any gradient."""
    hidden, weight, b, labels, rewards = make_head_batch((2, 6, 5, 21), torch.float32)
    hidden[labels == -100] = float("nan")
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    loss = fused_loss(h, w, labels, rewards, bias=b, chunk_size=2)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(torch.isfinite(w.grad))
    assert torch.all(h.grad[labels == -100] == 0) and torch.all(torch.isfinite(h.grad))


def test_fully_masked_batch_gives_zero_connected_to_all_inputs():
    hidden, weight, b, labels, rewards = make_head_batch((2, 3, 4, 9), torch.float32)
    labels[:] = -100
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    bb = b.clone().requires_grad_()
    loss = fused_loss(h, w, labels, rewards, bias=bb)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(h.grad == 0) and torch.all(w.grad == 0) and torch.all(bb.grad == 0)


def test_gradient_accumulation_equals_one_large_batch():
    hidden, weight, b, labels, rewards = make_head_batch((4, 8, 6, 45), torch.float32)
    n = int((labels != -100).sum())
    w_big = weight.clone().requires_grad_()
    fused_loss(hidden, w_big, labels, rewards, bias=b, chunk_size=3).backward()
    w_acc = weight.clone().requires_grad_()
    for half in (slice(0, 2), slice(2, 4)):
        fused_loss(
            hidden[half], w_acc, labels[half], rewards[half], bias=b, chunk_size=3, num_items_in_batch=n
        ).backward()
    torch.testing.assert_close(w_acc.grad, w_big.grad, atol=1e-6, rtol=1e-5)


def test_only_the_requested_gradients_are_computed():
    hidden, weight, b, labels, rewards = make_head_batch((2, 5, 4, 19), torch.float32)
    h = hidden.clone().requires_grad_()
    fused_loss(h, weight, labels, rewards, bias=b).backward()  # a frozen head (e.g. LoRA elsewhere)
    ref_h = hidden.clone().requires_grad_()
    rift_losses.rift_loss(F.linear(ref_h, weight, b), labels, rewards).backward()
    torch.testing.assert_close(h.grad, ref_h.grad, atol=1e-6, rtol=1e-5)
    assert weight.grad is None


class _Allocations(TorchDispatchMode):
    """Records the size of every new storage an aten op returns (meta tensors excluded)."""

    def __init__(self):
        super().__init__()
        self.known = set()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if not isinstance(o, torch.Tensor) or o.device.type == "meta":  # meta: shapes only, no memory
                continue
            if o.untyped_storage().data_ptr() not in self.known:
                self.known.add(o.untyped_storage().data_ptr())
                self.sizes.append((str(func), tuple(o.shape), o.untyped_storage().nbytes()))
        return out


def test_logits_are_never_built_whole():
    """Forward + backward never allocate anything near the (N, V) logits: at most a chunk's logits
    (float32 scratch included) or a weight-sized gradient."""
    B, T, H, V, chunk = 4, 64, 16, 4000, 32
    hidden = torch.randn(B, T, H, requires_grad=True)
    weight = torch.randn(V, H, requires_grad=True)
    labels = torch.randint(0, V, (B, T))
    rewards = torch.tensor([1.0, -0.2, 0.5, -1.0])
    mode = _Allocations()
    with mode:
        fused_loss(hidden, weight, labels, rewards, chunk_size=chunk).backward()
    largest = max(size for _, _, size in mode.sizes)
    logits_bytes = B * T * V * 4
    assert largest <= max(chunk * V * 4, V * H * 4), sorted(mode.sizes, key=lambda s: -s[2])[:3]
    assert largest * 8 <= logits_bytes


def test_default_chunk_size():
    assert default_chunk_size(151936, "cpu") == (1 << 23) // 151936
    assert default_chunk_size(10, "cpu") == (1 << 23) // 10
    assert default_chunk_size(1 << 30, "cpu") == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"weight": torch.zeros(5, 3)},
            ValueError,
            r"weight must have shape \(V, H\).*hidden \(2, 3, 4\), weight \(5, 3\)",
        ),
        ({"weight": torch.zeros(5, 4, dtype=torch.float64)}, TypeError, "weight must have the dtype"),
        ({"bias": torch.zeros(4)}, ValueError, r"bias must be None or have shape \(V,\)"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be None or a positive int, got 0"),
        ({"chunk_size": 2.0}, ValueError, "chunk_size must be None or a positive int, got 2.0"),
        ({"labels": torch.full((2, 3), 5)}, ValueError, r"labels must be in \[0, V=5\).*got 5 at index \[0, 0\]"),
        ({"labels": torch.zeros(2, 4, dtype=torch.long)}, ValueError, "labels must have the shape"),
        ({"hidden": torch.zeros(2, 3, 4, dtype=torch.long)}, TypeError, "hidden must be a floating-point tensor"),
        ({"impl": "cuda"}, ValueError, "impl must be one of"),
    ],
)
def test_bad_inputs_are_refused_with_the_parameter_named(kwargs, error, match):
    args = {
        "hidden": torch.zeros(2, 3, 4),
        "weight": torch.zeros(5, 4),
        "labels": torch.zeros(2, 3, dtype=torch.long),
    }
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    with pytest.raises(error, match=match):
        fused_token_logprobs(args["hidden"], args["weight"], args["labels"], **kwargs)


def test_loss_options_are_validated_before_any_matmul():
    hidden, weight, b, labels, rewards = make_head_batch((2, 3, 4, 9), torch.float32)
    with pytest.raises(ValueError, match="loss must be one of"):
        fused_loss(hidden, weight, labels, rewards, loss="dpo")
    with pytest.raises(ValueError, match=r"rewards must have shape \(B,\) per sample or \(B, T\) per token"):
        fused_loss(hidden, weight, labels, torch.zeros(3))
    with pytest.raises(ValueError, match="rewards must have shape"):
        fused_loss(hidden, weight, labels, torch.zeros(2, 3), level="sequence")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", ["auto", "torch"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_matches_the_materialized_path(impl, dtype):
    """On CUDA (Triton per chunk with impl='auto'): the values and gradients of the materialized path."""
    hidden, weight, b, labels, rewards = make_head_batch((4, 33, 64, 3001), dtype, ignore_index=42, per_token=True)
    inputs = [t.cuda() for t in (hidden, weight, b)]
    labels, rewards = labels.cuda(), rewards.cuda()
    value, grads = value_and_grads(
        lambda h, w, bb: fused_loss(h, w, labels, rewards, bias=bb, ignore_index=42, chunk_size=17, impl=impl), inputs
    )
    ref_value, ref_grads = value_and_grads(
        lambda h, w, bb: rift_losses.rift_loss(F.linear(h, w, bb), labels, rewards, ignore_index=42), inputs
    )
    torch.testing.assert_close(value, ref_value, atol=1e-5, rtol=1e-5)
    atol = {torch.float32: 1e-5, torch.bfloat16: 4e-3, torch.float16: 5e-4}[dtype]
    for g, ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, ref, atol=atol, rtol=2e-2 if dtype != torch.float32 else 1e-4)
