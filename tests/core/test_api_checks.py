"""Python API checks from issue 18 (case 10): log-probs above 0, numpy bools, rewards on another device.

Each case failed before: ``logprob_loss`` returned a negative loss for ``torch.rand`` "log-probs",
``constant_rewards`` refused a numpy bool array, and rewards or labels on another device ended in
a raw torch error instead of a message naming both tensors and devices.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rift_losses import constant_rewards, logprob_loss, naive_loss, rift_loss, token_logprobs


def test_logprob_loss_refuses_probabilities_passed_as_log_probs():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 3, generator=g)  # in (0, 1): probabilities, not log-probabilities
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError) as err:
        logprob_loss(probs, mask, torch.tensor([1.0, -0.2]))
    assert str(err.value) == (
        "logprobs must be <= 0 at the target tokens (log-probabilities, not probabilities or logits), got "
        f"{float(probs[0, 0]):.6g} at index [0, 0]"
    )


def test_logprob_loss_checks_only_target_tokens_and_allows_rounding_slack():
    logits = torch.randn(2, 4, 7, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 7, (2, 4), generator=torch.Generator().manual_seed(2))
    logp = token_logprobs(logits, labels)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 3] = False
    logp = logp.detach().clone()
    logp[1, 3] = 5.0  # padding: not a target token, never read
    rewards = torch.tensor([1.0, -0.2])
    expected = rift_loss(logits, torch.where(mask, labels, -100), rewards)
    assert logprob_loss(logp, mask, rewards).item() == pytest.approx(expected.item(), abs=1e-6)
    logp[0, 0] = 1e-6  # float32 rounding of a log-softmax of a near-certain token
    assert torch.isfinite(logprob_loss(logp, mask, rewards))
    logp[0, 1] = 0.01
    with pytest.raises(ValueError, match=r"logprobs must be <= 0 .* got 0.01 at index \[0, 1\]"):
        logprob_loss(logp, mask, rewards)


@pytest.mark.parametrize(
    "correct",
    [np.array([True, False, True]), [np.bool_(True), False, np.True_], [True, np.False_, True]],
    ids=["array", "numpy-scalars", "mixed"],
)
def test_constant_rewards_takes_numpy_and_python_bools(correct):
    assert constant_rewards(correct).tolist() == pytest.approx([1.0, -0.2, 1.0])


def test_constant_rewards_refuses_numpy_non_bools():
    with pytest.raises(TypeError, match="correct must be a bool array, got dtype int64"):
        constant_rewards(np.array([1, 0], dtype=np.int64))
    with pytest.raises(TypeError, match=r"correct must hold only bools, got np.int64\(1\) at index 0|got 1 at index 0"):
        constant_rewards([np.int64(1), True])


def test_rewards_that_cannot_reach_the_logits_device_name_both_devices():
    logits = torch.randn(2, 3, 5)
    labels = torch.randint(0, 5, (2, 3))
    meta_rewards = torch.empty(2, device="meta")  # holds no values: it cannot be moved
    with pytest.raises(ValueError, match=r"rewards must be on the device of labels \(cpu\) or movable there, got "
                       r"rewards on meta"):  # fmt: skip
        rift_loss(logits, labels, meta_rewards)
    with pytest.raises(ValueError, match=r"rewards must be on the device of logprobs \(cpu\) .* got rewards on meta"):
        logprob_loss(-torch.rand(2, 3), torch.ones(2, 3, dtype=torch.bool), meta_rewards)


def test_labels_or_mask_on_another_device_name_both_tensors_and_devices():
    logits = torch.randn(2, 3, 5)
    labels = torch.randint(0, 5, (2, 3))
    with pytest.raises(ValueError) as err:
        token_logprobs(logits, labels.to("meta"))
    assert str(err.value) == "labels must be on the device of logits (cpu), got labels on meta"
    with pytest.raises(ValueError) as err:
        naive_loss(logits, labels.to("meta"), torch.ones(2))
    assert str(err.value) == "labels must be on the device of logits (cpu), got labels on meta"
    with pytest.raises(ValueError) as err:
        logprob_loss(-torch.rand(2, 3), torch.ones(2, 3, dtype=torch.bool, device="meta"), torch.ones(2))
    assert str(err.value) == "mask must be on the device of logprobs (cpu), got mask on meta"
