"""``logprob_loss``: the public loss over per-token log-probabilities (what every loss calls)."""

from __future__ import annotations

import math

import pytest
import torch

import rift_losses

from core_reference import reference_logprob_loss


def _reference(logp: torch.Tensor, mask: torch.Tensor, rewards: list[float], loss: str) -> float:
    """Plain float64 loop: the per-token term by an ``if`` on the reward's sign, mean over targets."""
    total, count = 0.0, 0
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            if not mask[b, t]:
                continue
            lp, r = float(logp[b, t]), rewards[b]
            if loss == "naive" or r > 0:
                total += -r * lp
            elif r < 0:
                total += -r * math.exp(lp)
            count += 1
    return total / max(count, 1)


@pytest.mark.parametrize("loss", list(rift_losses.LOSSES))
def test_logprob_loss_matches_loop_reference_and_ignores_masked_values(loss):
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(3, 5, generator=g, dtype=torch.float64).float() * 3
    mask = torch.rand(3, 5, generator=g) > 0.3
    garbage = torch.where(mask, logp, torch.full_like(logp, float("nan")))  # masked values must not leak
    garbage.requires_grad_(True)
    rewards = [1.0, -0.2, 0.0]
    out = rift_losses.logprob_loss(garbage, mask, torch.tensor(rewards), loss=loss)
    assert out.item() == pytest.approx(_reference(logp, mask, rewards, loss), abs=1e-6)
    out.backward()
    assert torch.isfinite(garbage.grad).all() and (garbage.grad[~mask] == 0).all()


def test_logits_losses_equal_token_logprobs_plus_logprob_loss():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 7, generator=g)
    labels = torch.randint(0, 7, (2, 4), generator=g)
    labels[0, :2] = -100
    rewards = torch.tensor([1.0, -0.5])
    lp = rift_losses.token_logprobs(logits, labels)
    for name, fn in (("rift", rift_losses.rift_loss), ("naive", rift_losses.naive_loss)):
        for level in rift_losses.LEVELS:
            a, sa = fn(logits, labels, rewards, level=level, return_stats=True)
            b, sb = rift_losses.logprob_loss(lp, labels != -100, rewards, loss=name, level=level, return_stats=True)
            torch.testing.assert_close(a, b, rtol=0, atol=0)
            for x, y in zip(sa, sb):
                torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_logprob_loss_errors_name_the_parameter():
    lp = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        rift_losses.logprob_loss(lp, torch.ones(2, 3), torch.ones(2))
    with pytest.raises(ValueError, match=r"mask must have the shape of logprobs, got logprobs \(2, 3\), mask \(3,\)"):
        rift_losses.logprob_loss(lp, torch.ones(3, dtype=torch.bool), torch.ones(2))
    with pytest.raises(
        ValueError,
        match=r"rewards must have shape \(B,\) per sample or \(B, T\) per token, got logprobs \(2, 3\), rewards \(3,\)",
    ):
        rift_losses.logprob_loss(lp, torch.ones(2, 3, dtype=torch.bool), torch.ones(3))
    with pytest.raises(ValueError, match="loss must be one of 'naive', 'rift', got 'rfit'"):
        rift_losses.logprob_loss(lp, torch.ones(2, 3, dtype=torch.bool), torch.ones(2), loss="rfit")


# ---------------------------------------------------------------- against the float64 reference


def make_logprobs(shape, *, per_token=False, seed=0):
    """Log-probs in (-4, 0) with about a third of the positions masked out (NaN there: never read),
    at least one target per sample, and one sample with reward 0."""
    g = torch.Generator().manual_seed(seed)
    clean = -torch.rand(shape, generator=g, dtype=torch.float64) * 4
    mask = torch.rand(shape, generator=g) > 0.35
    mask[..., 0] = True
    if len(shape) == 2:
        rewards = torch.tensor([1.0, -0.2, 0.0, -0.8, 0.5][: shape[0]])
    else:
        rewards = torch.empty(shape[0]).uniform_(-1, 1, generator=g)
    if per_token:
        rewards = torch.empty(shape).uniform_(-1, 1, generator=g)
        rewards[..., 1] = 0.0
    garbage = torch.where(mask, clean, torch.full_like(clean, float("nan"))).float()
    return clean, garbage, mask, rewards


def value_and_grad(fn, logprobs):
    leaf = logprobs.detach().clone().requires_grad_()
    value = fn(leaf)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.detach(), grad


CASES = [
    # (shape, level, per_token)
    ((4, 9), "token", False),
    ((4, 9), "token", True),
    ((37,), "token", True),
    ((4, 9), "sequence", False),
]


@pytest.mark.parametrize("loss", list(rift_losses.LOSSES))
@pytest.mark.parametrize("shape,level,per_token", CASES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("num_items_in_batch", [None, 23, torch.tensor(23)], ids=["count", "int", "tensor"])
def test_values_and_gradients_wrt_logprobs_match_float64_reference(
    loss, shape, level, per_token, reduction, num_items_in_batch
):
    clean, garbage, mask, rewards = make_logprobs(shape, per_token=per_token)
    kwargs = {"loss": loss, "reduction": reduction, "num_items_in_batch": num_items_in_batch, "level": level}
    value, grad = value_and_grad(lambda x: rift_losses.logprob_loss(x, mask, rewards, **kwargs), garbage)
    ref_value, ref_grad = value_and_grad(lambda x: reference_logprob_loss(x, mask, rewards, **kwargs), clean)
    assert value.dtype == torch.float32 and value.dim() == 0
    torch.testing.assert_close(value.double(), ref_value, atol=1e-5, rtol=1e-5)
    assert grad.dtype == torch.float32  # the gradient comes back in the dtype of the log-probs
    torch.testing.assert_close(grad.double(), ref_grad, atol=1e-6, rtol=1e-5)
    # masked positions hold NaN: nothing of them reaches the loss or a gradient
    assert torch.all(grad[~mask] == 0)


@pytest.mark.parametrize("loss", list(rift_losses.LOSSES))
@pytest.mark.parametrize("shape,per_token", [((4, 9), False), ((4, 9), True), ((37,), True)], ids=str)
def test_reduction_none_is_per_token_terms_with_zeros_at_masked(loss, shape, per_token):
    clean, garbage, mask, rewards = make_logprobs(shape, per_token=per_token)
    out = rift_losses.logprob_loss(garbage, mask, rewards, loss=loss, reduction="none")
    ref = reference_logprob_loss(clean, mask, rewards, loss=loss, reduction="none")
    assert out.shape == mask.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, atol=1e-6, rtol=1e-6)
    assert torch.all(out[~mask] == 0)


def test_sequence_level_none_is_per_sample_and_matches_reference():
    clean, garbage, mask, rewards = make_logprobs((4, 9))
    mask[3] = False  # a sample without target: its term is 0
    out = rift_losses.logprob_loss(garbage, mask, rewards, level="sequence", reduction="none")
    assert out.shape == (4,)
    for b in range(4):
        ref = reference_logprob_loss(
            clean[b : b + 1], mask[b : b + 1], rewards[b : b + 1], loss="rift", reduction="sum", level="sequence"
        )
        assert out[b].item() == pytest.approx(ref.item(), abs=1e-6)
    assert out[3].item() == 0.0
    # sequence level is eq. 5 on pi(y|x) = exp(sum_t log p_t): -r * pi for the negative sample
    assert out[1].item() == pytest.approx(0.2 * math.exp(clean[1][mask[1]].sum().item()), rel=1e-5)


def test_num_items_in_batch_makes_micro_batches_add_up_to_one_batch():
    """Two halves with num_items_in_batch = all target tokens: their sum is the whole batch's mean
    loss, and so are the gradients (gradient accumulation)."""
    clean, garbage, mask, rewards = make_logprobs((4, 9))
    whole, whole_grad = value_and_grad(lambda x: rift_losses.logprob_loss(x, mask, rewards), garbage)
    n = int(mask.sum())
    total = 0.0
    grads = []
    for half in (slice(0, 2), slice(2, 4)):
        m, r = mask[half], rewards[half]
        v, g = value_and_grad(
            lambda x, m=m, r=r: rift_losses.logprob_loss(x, m, r, num_items_in_batch=n), garbage[half]
        )
        total += v.item()
        grads.append(g)
    assert total == pytest.approx(whole.item(), abs=1e-6)
    torch.testing.assert_close(torch.cat(grads), whole_grad, atol=1e-7, rtol=0)


@pytest.mark.parametrize("level", rift_losses.LEVELS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_stats_match_the_reference_and_add_up_to_the_loss(level, reduction):
    clean, garbage, mask, rewards = make_logprobs((5, 9))
    loss, stats = rift_losses.logprob_loss(garbage, mask, rewards, level=level, reduction=reduction, return_stats=True)
    assert isinstance(stats, rift_losses.LossStats)
    assert all(not s.requires_grad and s.dim() == 0 for s in stats)
    torch.testing.assert_close(stats.pos_loss + stats.neg_loss, loss.detach(), atol=1e-6, rtol=0)
    pos, neg = rewards > 0, rewards < 0
    assert int(stats.pos_tokens) == int(mask[pos].sum()) and int(stats.neg_tokens) == int(mask[neg].sum())
    # each part is the reference loss over its samples alone, with the whole call's denominator
    denom = {"mean": float(mask.sum() if level == "token" else mask.any(-1).sum()), "sum": 1.0}[reduction]
    for part, keep in ((stats.pos_loss, pos), (stats.neg_loss, neg)):
        ref = reference_logprob_loss(clean[keep], mask[keep], rewards[keep], loss="rift", reduction="sum", level=level)
        assert part.item() == pytest.approx(ref.item() / denom, rel=1e-6, abs=1e-6)
    neg_p = clean[neg][mask[neg]].exp()
    assert stats.neg_prob_sum.item() == pytest.approx(neg_p.sum().item(), rel=1e-5)
    assert stats.neg_prob_mean.item() == pytest.approx(neg_p.mean().item(), rel=1e-5)


@pytest.mark.parametrize("level", rift_losses.LEVELS)
@pytest.mark.parametrize("reduction", list(rift_losses.REDUCTIONS))
def test_empty_mask_gives_zero_connected_to_the_graph(level, reduction):
    logprobs = torch.full((2, 4), float("nan"), requires_grad=True)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    out, stats = rift_losses.logprob_loss(
        logprobs, mask, torch.tensor([1.0, -0.2]), level=level, reduction=reduction, return_stats=True
    )
    assert out.requires_grad and torch.all(out.detach() == 0)
    out.sum().backward()
    assert logprobs.grad is not None and torch.all(logprobs.grad == 0)  # DDP sees the parameter used
    assert int(stats.pos_tokens) == 0 and int(stats.neg_tokens) == 0 and float(stats.neg_prob_mean) == 0.0


def test_low_precision_logprobs_are_used_as_float32():
    clean, _, mask, rewards = make_logprobs((4, 9))
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        x = clean.to(dtype)
        got = rift_losses.logprob_loss(x, mask, rewards)
        want = rift_losses.logprob_loss(x.float(), mask, rewards)
        assert got.dtype == torch.float32 and torch.equal(got, want)


def test_inputs_are_not_modified():
    _, garbage, mask, rewards = make_logprobs((4, 9), per_token=True)
    before = (garbage.clone(), mask.clone(), rewards.clone())
    rift_losses.logprob_loss(garbage, mask, rewards, return_stats=True)
    assert torch.equal(garbage.isnan(), before[0].isnan()) and torch.equal(garbage.nan_to_num(), before[0].nan_to_num())
    assert torch.equal(mask, before[1]) and torch.equal(rewards, before[2])


def test_more_errors_name_the_parameter():
    lp, mask = torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(TypeError, match="logprobs must be a torch.Tensor, got list"):
        rift_losses.logprob_loss([0.0], mask, torch.ones(2))
    with pytest.raises(TypeError, match="logprobs must be a floating-point tensor .*, got dtype torch.int64"):
        rift_losses.logprob_loss(torch.zeros(2, 3, dtype=torch.long), mask, torch.ones(2))
    with pytest.raises(ValueError, match="logprobs must have at least 1 dimension"):
        rift_losses.logprob_loss(torch.tensor(0.0), torch.tensor(True), torch.ones(1))
    with pytest.raises(
        ValueError, match=r"logprobs must have shape \(B, T\) when level='sequence', got logprobs \(6,\)"
    ):
        rift_losses.logprob_loss(torch.zeros(6), torch.ones(6, dtype=torch.bool), torch.ones(6), level="sequence")
    with pytest.raises(
        ValueError, match=r"rewards must have shape \(B,\) per sample, got logprobs \(2, 3\), rewards \(2, 3\)"
    ):
        rift_losses.logprob_loss(lp, mask, torch.ones(2, 3), level="sequence")
    with pytest.raises(
        ValueError,
        match=r"rewards must have the shape of logprobs \(one reward per token\), got logprobs \(6,\), rewards \(2,\)",
    ):
        rift_losses.logprob_loss(torch.zeros(6), torch.ones(6, dtype=torch.bool), torch.ones(2))
    with pytest.raises(ValueError, match=r"rewards must be finite, got nan at index \[1\]"):
        rift_losses.logprob_loss(lp, mask, torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        rift_losses.logprob_loss(lp, mask, torch.ones(2), reduction="avg")
    with pytest.raises(ValueError, match="level must be one of 'token', 'sequence', got 'seq'"):
        rift_losses.logprob_loss(lp, mask, torch.ones(2), level="seq")
    with pytest.raises(ValueError, match="num_items_in_batch must be a finite number >= 0, got -1"):
        rift_losses.logprob_loss(lp, mask, torch.ones(2), num_items_in_batch=-1)
