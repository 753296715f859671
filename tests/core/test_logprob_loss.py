"""``logprob_loss``: the public loss over per-token log-probabilities (what every loss calls)."""

from __future__ import annotations

import math

import pytest
import torch

import rift_losses


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
    with pytest.raises(ValueError, match=r"rewards must have shape \(B,\) per sample or \(B, T\) per token, got logprobs \(2, 3\), rewards \(3,\)"):
        rift_losses.logprob_loss(lp, torch.ones(2, 3, dtype=torch.bool), torch.ones(3))
    with pytest.raises(ValueError, match="loss must be one of 'naive', 'rift', got 'rfit'"):
        rift_losses.logprob_loss(lp, torch.ones(2, 3, dtype=torch.bool), torch.ones(2), loss="rfit")
