"""The losses against the independent float64 loop in reference.py: values and gradients."""

import pytest
import torch
import torch.nn.functional as F

import rift_losses

from core_reference import TOLERANCES, reference_loss, reference_none

LOSS_FNS = {"naive": rift_losses.naive_loss, "rift": rift_losses.rift_loss}
SHAPES = [(1, 1, 2), (2, 5, 11), (3, 7, 33), (2, 4, 1000)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def make_batch(shape, dtype, *, ignore_index=-100, per_token=False, scale=3.0):
    B, T, V = shape
    logits = (torch.randn(B, T, V) * scale).to(dtype)
    labels = torch.randint(0, V, (B, T))
    drop = torch.rand(B, T) < 0.3
    drop[0, 0] = B * T > 1  # keep at least one target in tiny shapes, drop one elsewhere
    labels[drop] = ignore_index
    if per_token:
        rewards = torch.empty(B, T).uniform_(-1, 1)
    else:
        rewards = torch.tensor([1.0, -0.2, 0.5, -0.8, 0.0][:B] + [1.0] * max(0, B - 5))
    return logits, labels, rewards


def dtype_math_loss(logits, labels, rewards, *, loss, ignore_index):
    """The same loss computed naively *in the input dtype* (no float32 accumulation)."""
    mask = labels != ignore_index
    logp = torch.log_softmax(logits, dim=-1).gather(-1, torch.where(mask, labels, 0)[..., None])[..., 0]
    r = (rewards if rewards.dim() == 2 else rewards[:, None].expand_as(logp)).to(logits.dtype)
    if loss == "naive":
        terms = -r * logp
    else:
        terms = -r * torch.where(r > 0, logp, logp.exp())
    return (terms * mask).sum() / mask.sum().clamp(min=1)


def grads(fn, logits):
    leaf = logits.detach().clone().requires_grad_()
    value = fn(leaf)
    (g,) = torch.autograd.grad(value, leaf)
    return value.detach().double(), g.double()


@pytest.mark.parametrize("loss", ["naive", "rift"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("ignore_index", [-100, 42])
@pytest.mark.parametrize("per_token", [False, True], ids=["per_sample", "per_token"])
def test_values_and_gradients_match_float64_reference(loss, dtype, shape, ignore_index, per_token):
    logits, labels, rewards = make_batch(shape, dtype, ignore_index=ignore_index, per_token=per_token)
    fn = LOSS_FNS[loss]
    value, grad = grads(lambda x: fn(x, labels, rewards, ignore_index=ignore_index), logits)
    ref_value, ref_grad = grads(
        lambda x: reference_loss(x, labels, rewards, loss=loss, ignore_index=ignore_index), logits.double()
    )
    loss_tol, grad_tol = TOLERANCES[dtype]
    if dtype == torch.float32:
        torch.testing.assert_close(value, ref_value, atol=loss_tol, rtol=1e-5)
        torch.testing.assert_close(grad, ref_grad, atol=grad_tol, rtol=1e-4)
        return
    # Low precision: never worse than the same math done in that dtype (the error budget).
    low_value, low_grad = grads(
        lambda x: dtype_math_loss(x, labels, rewards, loss=loss, ignore_index=ignore_index), logits
    )
    assert (value - ref_value).abs() <= (low_value - ref_value).abs() + loss_tol
    assert (grad - ref_grad).abs().max() <= (low_grad - ref_grad).abs().max() + grad_tol
    # and the gradient is the float32-accurate one, rounded once to the dtype
    torch.testing.assert_close(grad, ref_grad.to(dtype).double(), atol=grad_tol, rtol=0)


@pytest.mark.parametrize("loss", ["naive", "rift"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ignore_index", [-100, 42])
def test_sequence_level_matches_reference(loss, reduction, ignore_index):
    logits, labels, rewards = make_batch((4, 6, 50), torch.float32, ignore_index=ignore_index, scale=1.0)
    labels[3] = ignore_index  # a sample with no target: excluded from the mean
    fn = LOSS_FNS[loss]
    value, grad = grads(
        lambda x: fn(x, labels, rewards, ignore_index=ignore_index, reduction=reduction, level="sequence"), logits
    )
    ref_value, ref_grad = grads(
        lambda x: reference_loss(
            x, labels, rewards, loss=loss, ignore_index=ignore_index, reduction=reduction, level="sequence"
        ),
        logits.double(),
    )
    torch.testing.assert_close(value, ref_value, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("loss", ["naive", "rift"])
@pytest.mark.parametrize("per_token", [False, True], ids=["per_sample", "per_token"])
def test_reduction_none_returns_per_token_terms_with_zeros_at_ignored(loss, per_token):
    logits, labels, rewards = make_batch((3, 7, 19), torch.float32, per_token=per_token)
    out = LOSS_FNS[loss](logits, labels, rewards, reduction="none")
    assert out.shape == labels.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference_none(logits, labels, rewards, loss=loss), atol=1e-5, rtol=1e-5)
    assert torch.all(out[labels == -100] == 0)


def test_sequence_level_none_is_per_sample():
    logits, labels, rewards = make_batch((3, 5, 9), torch.float32)
    labels[2] = -100
    out = rift_losses.rift_loss(logits, labels, rewards, reduction="none", level="sequence")
    assert out.shape == (3,)
    assert out[2] == 0
    total = rift_losses.rift_loss(logits, labels, rewards, reduction="sum", level="sequence")
    torch.testing.assert_close(out.sum(), total)


@pytest.mark.parametrize("loss", ["naive", "rift"])
def test_gradient_accumulation_with_num_items_in_batch_equals_one_large_batch(loss):
    """Micro-batches divided by the global token count sum to the large batch's mean loss."""
    logits, labels, rewards = make_batch((6, 9, 23), torch.float32, per_token=False)
    fn = LOSS_FNS[loss]
    full_value, full_grad = grads(lambda x: fn(x, labels, rewards), logits)
    n_items = int((labels != -100).sum())
    leaf = logits.detach().clone().requires_grad_()
    total = 0.0
    for idx in (slice(0, 1), slice(1, 4), slice(4, 6)):  # uneven micro-batches, as in real data
        part = fn(leaf[idx], labels[idx], rewards[idx], num_items_in_batch=torch.tensor(n_items))
        part.backward()
        total += part.detach().double()
    torch.testing.assert_close(total, full_value, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(leaf.grad.double(), full_grad, atol=1e-7, rtol=1e-5)


def test_num_items_in_batch_as_int_matches_tensor_and_divides_sum():
    logits, labels, rewards = make_batch((2, 5, 11), torch.float32)
    s = rift_losses.rift_loss(logits, labels, rewards, reduction="sum")
    a = rift_losses.rift_loss(logits, labels, rewards, num_items_in_batch=37)
    b = rift_losses.rift_loss(logits, labels, rewards, num_items_in_batch=torch.tensor(37))
    torch.testing.assert_close(a, s / 37)
    torch.testing.assert_close(b, s / 37)


def test_fully_masked_rows_contribute_nothing():
    logits, labels, rewards = make_batch((3, 6, 13), torch.float32)
    masked = labels.clone()
    masked[1] = -100
    keep = torch.tensor([0, 2])
    value, grad = grads(lambda x: rift_losses.rift_loss(x, masked, rewards), logits)
    sub_value = rift_losses.rift_loss(logits[keep], labels[keep], rewards[keep])
    torch.testing.assert_close(value.float(), sub_value)
    assert torch.all(grad[1] == 0)


@pytest.mark.parametrize("fn", [rift_losses.naive_loss, rift_losses.rift_loss])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_fully_masked_batch_gives_zero_connected_to_logits(fn, level):
    logits = torch.randn(2, 4, 7, requires_grad=True)
    labels = torch.full((2, 4), -100)
    loss = fn(logits, labels, torch.tensor([1.0, -0.2]), level=level)
    assert loss.item() == 0.0
    assert loss.requires_grad and loss.grad_fn is not None
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_batch_of_one_single_token():
    logits = torch.tensor([[[2.0, 0.5, -1.0]]], requires_grad=True)
    labels = torch.tensor([[1]])
    loss = rift_losses.rift_loss(logits, labels, torch.tensor([1.0]))
    torch.testing.assert_close(loss, F.cross_entropy(logits[0], labels[0]))


def test_flat_rows_with_per_token_rewards():
    """(N, V) logits and (N,) labels: rewards (N,) are per token (a packed row)."""
    logits, labels, rewards = make_batch((1, 12, 17), torch.float32, per_token=True)
    flat = rift_losses.rift_loss(logits[0], labels[0], rewards[0])
    batched = rift_losses.rift_loss(logits, labels, rewards)
    torch.testing.assert_close(flat, batched)


def test_rewards_of_integer_dtype_are_used_as_float():
    logits, labels, _ = make_batch((2, 5, 11), torch.float32)
    a = rift_losses.rift_loss(logits, labels, torch.tensor([1, -1]))
    b = rift_losses.rift_loss(logits, labels, torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(a, b)


def test_reward_at_ignored_position_never_reaches_the_gradient():
    logits, labels, rewards = make_batch((2, 6, 11), torch.float32, per_token=True)
    labels[:, 0] = -100
    huge = rewards.clone()
    huge[:, 0] = 1e30
    _, g1 = grads(lambda x: rift_losses.rift_loss(x, labels, rewards), logits)
    _, g2 = grads(lambda x: rift_losses.rift_loss(x, labels, huge), logits)
    torch.testing.assert_close(g1, g2)


def test_stats_parts_sum_to_loss_and_count_tokens():
    logits, labels, rewards = make_batch((5, 6, 13), torch.float32)
    for reduction in ("mean", "sum"):
        loss, st = rift_losses.rift_loss(logits, labels, rewards, reduction=reduction, return_stats=True)
        torch.testing.assert_close(st.pos_loss + st.neg_loss, loss.detach())
    mask = labels != -100
    r = rewards[:, None].expand_as(labels)
    assert int(st.pos_tokens) == int((mask & (r > 0)).sum())
    assert int(st.neg_tokens) == int((mask & (r < 0)).sum())
    p = torch.softmax(logits.double(), -1).gather(-1, labels.clamp_min(0)[..., None])[..., 0]
    neg = mask & (r < 0)
    torch.testing.assert_close(st.neg_prob_mean.double(), p[neg].mean(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(st.neg_prob_sum.double(), p[neg].sum(), atol=1e-6, rtol=1e-5)
    assert not any(t.requires_grad for t in st)


def test_stats_sequence_level_parts_sum_to_loss():
    logits, labels, rewards = make_batch((5, 6, 13), torch.float32, scale=0.5)
    loss, st = rift_losses.naive_loss(logits, labels, rewards, level="sequence", return_stats=True)
    torch.testing.assert_close(st.pos_loss + st.neg_loss, loss.detach())


def test_normalized_reward_loss_is_rift_on_normalized_rewards():
    logits, labels, _ = make_batch((6, 5, 11), torch.float32)
    rewards = torch.tensor([1.0, -0.2, -0.2, 1.0, 1.0, 1.0])
    groups = torch.tensor([7, 7, 7, 3, 3, 9])
    for method in rift_losses.NORMALIZATIONS:
        got = rift_losses.normalized_reward_loss(logits, labels, rewards, groups, method=method)
        want = rift_losses.rift_loss(logits, labels, rift_losses.normalize_rewards(rewards, groups, method=method))
        torch.testing.assert_close(got, want)


def test_inputs_are_not_modified():
    for dtype in DTYPES:
        logits, labels, rewards = make_batch((3, 5, 40), dtype, per_token=True)
        logits.requires_grad_()
        before = (logits.detach().clone(), labels.clone(), rewards.clone())
        rift_losses.rift_loss(logits, labels, rewards).backward()
        rift_losses.naive_loss(logits, labels, rewards, level="token").backward()
        assert (
            torch.equal(logits.detach(), before[0])
            and torch.equal(labels, before[1])
            and torch.equal(rewards, before[2])
        )


@pytest.mark.parametrize("fn", [rift_losses.rift_loss, rift_losses.naive_loss])
def test_impl_and_inplace_grad_pass_through_with_the_same_result(fn):
    logits, labels, rewards = make_batch((3, 5, 40), torch.bfloat16)
    value, grad = grads(lambda x: fn(x, labels, rewards), logits)
    value_t, grad_t = grads(lambda x: fn(x, labels, rewards, impl="torch"), logits)
    leaf = logits.detach().clone().requires_grad_()
    buffer = leaf * 1  # a non-leaf buffer, as a model's logits are: it becomes its own gradient
    loss = fn(buffer, labels, rewards, inplace_grad=True)
    (g_inplace,) = torch.autograd.grad(loss, leaf)
    torch.testing.assert_close(value_t, value)
    torch.testing.assert_close(grad_t, grad)
    torch.testing.assert_close(loss.detach().double(), value)
    torch.testing.assert_close(g_inplace.double(), grad)
    with pytest.raises(ValueError, match="impl must be one of 'auto', 'torch', 'triton', got 'cuda'"):
        fn(logits, labels, rewards, impl="cuda")
