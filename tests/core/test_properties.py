"""The paper's claims as properties (hypothesis)."""

import math

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import rift_losses

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


@st.composite
def batches(draw, *, max_b=4, max_t=6, max_v=12):
    B = draw(st.integers(1, max_b))
    T = draw(st.integers(1, max_t))
    V = draw(st.integers(2, max_v))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 100.0]))
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * scale
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < 0.25] = -100
    rewards = torch.tensor(
        draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=B, max_size=B)), dtype=torch.float32
    )
    return logits, labels, rewards


@SETTINGS
@given(batches())
def test_rift_is_bounded_below_by_the_sum_of_its_negative_rewards(batch):
    """Theorem 3.4 (i): each negative term -r p lies in [0, -r], each positive term -r log p >= 0,
    so the summed loss is >= sum of negative rewards over negative tokens (indeed >= 0), for any logits."""
    logits, labels, rewards = batch
    mask = labels != -100
    r_tok = rewards[:, None].expand_as(labels)
    loss, stats = rift_losses.rift_loss(logits, labels, rewards, reduction="sum", return_stats=True)
    neg_reward_sum = float(r_tok[mask & (r_tok < 0)].sum())
    assert float(loss) >= neg_reward_sum - 1e-6
    assert float(loss) >= -1e-6
    assert -1e-6 <= float(stats.neg_loss) <= -neg_reward_sum + 1e-5


def _single_token(target_logit: float):
    """Logits (1, 1, 4) with the target token (id 0) at ``target_logit`` against zeros."""
    logits = torch.zeros(1, 1, 4, dtype=torch.float64)
    logits[0, 0, 0] = target_logit
    return logits.float(), torch.tensor([[0]])


def _two_points(fn, r: float, k: float, dk: float):
    """``fn``'s loss and the target's p at target logits -k and -k - dk: (loss1, loss2, p1, p2)."""
    rewards = torch.tensor([r])
    logits1, labels = _single_token(-k)
    logits2, _ = _single_token(-k - dk)
    loss1, loss2 = (float(fn(x, labels, rewards)) for x in (logits1, logits2))
    p1, p2 = (math.exp(float(rift_losses.token_logprobs(x, labels))) for x in (logits1, logits2))
    return loss1, loss2, p1, p2


@SETTINGS
@given(r=st.floats(-1.0, -0.01), k=st.floats(5.0, 60.0))
def test_naive_loss_goes_to_minus_infinity_and_its_gradient_in_p_grows_like_one_over_p(r, k):
    """Theorem 3.2: for r < 0, -r log p -> -inf as p -> 0, and dL/dp = -r / p."""
    loss1, loss2, p1, p2 = _two_points(rift_losses.naive_loss, r, k, 1.0)
    # Lower p, lower loss, without bound: the loss tracks r * k (log p ~ -k).
    assert loss2 < loss1 < 0
    assert loss1 <= 0.99 * abs(r) * -k
    # Mean-value slope in p: -r / xi with xi in (p2, p1), so |slope| >= |r| / p1: unbounded as p -> 0.
    slope = (loss1 - loss2) / (p1 - p2)
    assert abs(slope) >= abs(r) / p1 * (1 - 1e-3)


@SETTINGS
@given(r=st.floats(-1.0, -0.01), k=st.floats(0.0, 60.0))
def test_rift_negative_term_is_linear_in_p_with_constant_gradient(r, k):
    """Eq. 5: for r < 0 the term is -r p: bounded in [0, -r], slope -r whatever p."""
    loss1, loss2, p1, p2 = _two_points(rift_losses.rift_loss, r, k, 0.5)
    assert 0 <= loss2 <= loss1 <= -r
    if p1 - p2 > 1e-6:
        assert math.isclose((loss1 - loss2) / (p1 - p2), -r, rel_tol=1e-3)


@SETTINGS
@given(batches(max_v=30))
def test_with_all_rewards_one_rift_equals_cross_entropy(batch):
    logits, labels, _ = batch
    B, T, V = logits.shape
    leaf = logits.clone().requires_grad_()
    rift = rift_losses.rift_loss(leaf, labels, torch.ones(B))
    (g,) = torch.autograd.grad(rift, leaf)
    leaf2 = logits.clone().requires_grad_()
    ce = F.cross_entropy(leaf2.view(-1, V), labels.view(-1), ignore_index=-100)
    if not bool((labels != -100).any()):
        ce = leaf2.sum() * 0  # torch gives nan for an empty mean; ours gives 0 (see test_losses)
    (g2,) = torch.autograd.grad(ce, leaf2)
    torch.testing.assert_close(rift, ce, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g, g2, atol=1e-6, rtol=1e-4)


@SETTINGS
@given(batches())
def test_rift_negative_branch_gradient_is_minus_r_p_grad_log_p(batch):
    """For r < 0, d(-r p)/dz = -r * p * d(log p)/dz, token by token."""
    logits, labels, rewards = batch
    rewards = -rewards.abs() - 0.01  # all negative
    leaf = logits.clone().requires_grad_()
    (g,) = torch.autograd.grad(rift_losses.rift_loss(leaf, labels, rewards, reduction="sum"), leaf)
    leaf2 = logits.double().requires_grad_()
    logp = torch.log_softmax(leaf2, -1).gather(-1, labels.clamp_min(0)[..., None])[..., 0]
    mask = labels != -100
    weights = -rewards.double()[:, None] * logp.detach().exp() * mask  # -r * p, held constant
    (want,) = torch.autograd.grad((weights * logp).sum(), leaf2)  # sum_t (-r p_t) grad log p_t
    torch.testing.assert_close(g.double(), want, atol=1e-6, rtol=1e-4)
