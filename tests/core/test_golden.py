"""Golden values worked by hand (the arithmetic is in each docstring)."""

import math

import pytest
import torch

import rift_losses

from core_reference import reference_normalize

LN2 = math.log(2.0)


def uniform_batch():
    """Two samples of two target tokens over V = 2 with equal logits: every p_t = 1/2.

    Sample 0 has r = +1.0 (correct), sample 1 has r = -0.2 (wrong): the paper's scheme.
    """
    logits = torch.zeros(2, 3, 2)
    labels = torch.tensor([[-100, 0, 1], [-100, 1, 1]])  # first position is prompt
    rewards = torch.tensor([1.0, -0.2])
    return logits, labels, rewards


def test_naive_golden():
    """Eq. 1 per token: -r log p.  r=+1: -(1)(-ln 2) = ln 2 = 0.693147 per token (2 tokens).
    r=-0.2: -(-0.2)(-ln 2) = -0.2 ln 2 = -0.138629 per token (2 tokens).
    sum = 2 ln 2 - 0.4 ln 2 = 1.6 ln 2 = 1.109035; mean over 4 tokens = 0.4 ln 2 = 0.277259."""
    logits, labels, rewards = uniform_batch()
    assert rift_losses.naive_loss(logits, labels, rewards, reduction="sum").item() == pytest.approx(1.6 * LN2, abs=1e-6)
    assert rift_losses.naive_loss(logits, labels, rewards).item() == pytest.approx(0.277259, abs=1e-6)


def test_rift_golden():
    """Eq. 5 per token: r=+1: -r log p = ln 2 = 0.693147 (2 tokens);
    r=-0.2: -r p = 0.2 * 0.5 = 0.1 (2 tokens).
    sum = 2 ln 2 + 0.2 = 1.586294; mean over 4 tokens = 0.396574.
    Positive part of the mean = 2 ln 2 / 4 = 0.346574, negative part = 0.2 / 4 = 0.05;
    mean p of negative tokens = 0.5."""
    logits, labels, rewards = uniform_batch()
    assert rift_losses.rift_loss(logits, labels, rewards, reduction="sum").item() == pytest.approx(
        2 * LN2 + 0.2, abs=1e-6
    )
    loss, stats = rift_losses.rift_loss(logits, labels, rewards, return_stats=True)
    assert loss.item() == pytest.approx(0.396574, abs=1e-6)
    assert stats.pos_loss.item() == pytest.approx(0.346574, abs=1e-6)
    assert stats.neg_loss.item() == pytest.approx(0.05, abs=1e-7)
    assert (int(stats.pos_tokens), int(stats.neg_tokens)) == (2, 2)
    assert stats.neg_prob_mean.item() == pytest.approx(0.5)


def test_rift_zero_reward_contributes_nothing_but_counts_in_the_mean():
    """r = 0: the term is 0. With rewards (1, 0): sum = 2 ln 2, mean over 4 tokens = ln 2 / 2 = 0.346574."""
    logits, labels, _ = uniform_batch()
    rewards = torch.tensor([1.0, 0.0])
    assert rift_losses.rift_loss(logits, labels, rewards).item() == pytest.approx(LN2 / 2, abs=1e-6)


def test_sequence_level_golden():
    """Eq. 5 literally: pi(y|x) = (1/2)(1/2) = 1/4 per sample.
    r=+1: -log(1/4) = 2 ln 2 = 1.386294; r=-0.2: -r pi = 0.2/4 = 0.05. Mean over 2 samples = 0.718147.
    Naive: r=+1: 1.386294; r=-0.2: -(-0.2)(-2 ln 2) = -0.277259. Mean = 0.554518."""
    logits, labels, rewards = uniform_batch()
    assert rift_losses.rift_loss(logits, labels, rewards, level="sequence").item() == pytest.approx(0.718147, abs=1e-6)
    assert rift_losses.naive_loss(logits, labels, rewards, level="sequence").item() == pytest.approx(0.554518, abs=1e-6)


def test_num_items_in_batch_golden():
    """RIFT sum 2 ln 2 + 0.2 = 1.586294 divided by a global count of 8 tokens = 0.198287."""
    logits, labels, rewards = uniform_batch()
    assert rift_losses.rift_loss(logits, labels, rewards, num_items_in_batch=8).item() == pytest.approx(
        0.198287, abs=1e-6
    )


def test_token_logprobs_golden():
    """logits (ln 1, ln 3) = (0, 1.098612): p = (1/4, 3/4); log p = (-1.386294, -0.287682)."""
    logits = torch.tensor([[0.0, math.log(3.0)]])
    out = rift_losses.token_logprobs(logits.expand(2, 2), torch.tensor([0, 1]))
    assert out.tolist() == pytest.approx([-1.386294, -0.287682], abs=1e-6)


GROUP_REWARDS = [1.0, -0.2, -0.2, 1.0, 1.0, 1.0, -0.2, -0.2, -0.2]
GROUP_IDS = ["a", "a", "a", "a", "b", "b", "c", "c", "c"]


def test_gaussian_golden():
    """Eq. 6, group a = (1, -0.2, -0.2, 1): mu = 0.4, sigma = sqrt(mean(0.36 x 4)) = 0.6,
    so r_hat = (0.6/0.6, -0.6/0.6, ...) = (1, -1, -1, 1). Groups b (all 1) and c (all -0.2)
    have equal rewards: 0, not NaN."""
    out = rift_losses.normalize_rewards(torch.tensor(GROUP_REWARDS), GROUP_IDS, method="gaussian")
    assert out.tolist() == pytest.approx([1, -1, -1, 1, 0, 0, 0, 0, 0], abs=1e-6)


def test_gpg_mean_golden():
    """Eq. 7, group a: alpha = N+/N = 2/4 = 0.5; r - mu = (0.6, -0.6, -0.6, 0.6) -> (0.3, -0.3, -0.3, 0.3).
    Group b: alpha = 1 but r - mu = 0 -> 0. Group c: alpha = 0 -> 0."""
    out = rift_losses.normalize_rewards(torch.tensor(GROUP_REWARDS), GROUP_IDS, method="gpg_mean")
    assert out.tolist() == pytest.approx([0.3, -0.3, -0.3, 0.3, 0, 0, 0, 0, 0], abs=1e-6)


def test_gpg_scaled_golden():
    """Eq. 8, group a: alpha = 0.5 -> (0.5, -0.1, -0.1, 0.5). Group b: alpha = 1 -> (1, 1).
    Group c: alpha = 0/3 = 0 -> 0 (a problem never solved teaches nothing under eq. 8)."""
    out = rift_losses.normalize_rewards(torch.tensor(GROUP_REWARDS), GROUP_IDS, method="gpg_scaled")
    assert out.tolist() == pytest.approx([0.5, -0.1, -0.1, 0.5, 1, 1, 0, 0, 0], abs=1e-6)


def test_constant_rewards_golden():
    """The paper's scheme: +1.0 if correct else -0.2; configurable."""
    assert rift_losses.constant_rewards([True, False]).tolist() == pytest.approx([1.0, -0.2])
    out = rift_losses.constant_rewards(torch.tensor([False, True]), positive=2.0, negative=-0.5)
    assert out.dtype == torch.float32 and out.tolist() == [-0.5, 2.0]
    assert rift_losses.constant_rewards([False], negative=0.0).tolist() == [0.0]


def test_reference_normalize_agrees_with_the_golden_values():
    """The Python reference used by the property tests reproduces the hand-worked values."""
    assert reference_normalize(GROUP_REWARDS, GROUP_IDS, "gaussian") == pytest.approx([1, -1, -1, 1, 0, 0, 0, 0, 0])
