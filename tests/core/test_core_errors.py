"""Every bad input gets a ValueError/TypeError that names the parameter, what was expected and
what came (all shapes printed on a shape mismatch)."""

import re
import subprocess
import sys

import pytest
import torch

import rift_losses

LOGITS = torch.randn(2, 3, 5)
LABELS = torch.tensor([[0, 1, -100], [4, 3, 2]])
REWARDS = torch.tensor([1.0, -0.2])
LOSS_FNS = [rift_losses.rift_loss, rift_losses.naive_loss]


def raises(exc, pattern):
    return pytest.raises(exc, match=re.escape(pattern) if not pattern.startswith("re:") else pattern[3:])


@pytest.mark.parametrize("fn", LOSS_FNS)
def test_labels_shape_mismatch_prints_all_shapes(fn):
    with raises(
        ValueError,
        "labels must have the shape of logits without its last (vocabulary) dimension, "
        "got logits (2, 3, 5), labels (2, 2)",
    ):
        fn(LOGITS, LABELS[:, :2], REWARDS)


@pytest.mark.parametrize("fn", LOSS_FNS)
def test_rewards_shape_mismatch_prints_all_shapes(fn):
    with raises(
        ValueError,
        "rewards must have shape (B,) per sample or (B, T) per token, "
        "got logits (2, 3, 5), labels (2, 3), rewards (3,)",
    ):
        fn(LOGITS, LABELS, torch.ones(3))
    with raises(
        ValueError, "rewards must have shape (B,) per sample, got logits (2, 3, 5), labels (2, 3), rewards (2, 3)"
    ):
        fn(LOGITS, LABELS, torch.ones(2, 3), level="sequence")


def test_non_floating_logits():
    with raises(
        TypeError, "logits must be a floating-point tensor (float32, bfloat16 or float16), got dtype torch.int64"
    ):
        rift_losses.rift_loss(LOGITS.long(), LABELS, REWARDS)
    with raises(TypeError, "logits must be a torch.Tensor, got list"):
        rift_losses.token_logprobs([[0.0, 1.0]], torch.tensor([0]))


def test_logits_without_vocabulary_dimension():
    with raises(ValueError, "logits must have shape (..., V) with at least 2 dimensions, got shape (5,)"):
        rift_losses.token_logprobs(torch.randn(5), torch.tensor(0))


def test_non_integer_labels():
    with raises(TypeError, "labels must be an integer tensor of token ids, got dtype torch.float32"):
        rift_losses.rift_loss(LOGITS, LABELS.float(), REWARDS)


@pytest.mark.parametrize("bad, index", [(5, "[0, 1]"), (-1, "[0, 1]"), (-100, None)])
def test_labels_outside_vocabulary_name_value_and_index(bad, index):
    labels = LABELS.clone()
    labels[0, 1] = bad
    if index is None:  # -100 is the ignore_index: fine
        rift_losses.rift_loss(LOGITS, labels, REWARDS)
        return
    with raises(ValueError, f"labels must be in [0, V=5) or equal ignore_index=-100, got {bad} at index {index}"):
        rift_losses.rift_loss(LOGITS, labels, REWARDS)


def test_custom_ignore_index_is_respected_and_minus_100_then_rejected():
    labels = LABELS.clone()
    labels[labels == -100] = 42
    rift_losses.rift_loss(LOGITS, labels, REWARDS, ignore_index=42)
    with raises(ValueError, "labels must be in [0, V=5) or equal ignore_index=42, got -100 at index [0, 2]"):
        rift_losses.rift_loss(LOGITS, LABELS, REWARDS, ignore_index=42)


@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")])
@pytest.mark.parametrize("fn", LOSS_FNS)
def test_non_finite_rewards_name_the_first_bad_index(fn, value, shown):
    rewards = torch.tensor([1.0, value])
    with raises(ValueError, f"rewards must be finite, got {shown} at index [1]"):
        fn(LOGITS, LABELS, rewards)
    token_rewards = torch.ones(2, 3)
    token_rewards[1, 2] = value
    token_rewards[1, 1] = value
    with raises(ValueError, f"rewards must be finite, got {shown} at index [1, 1]"):
        fn(LOGITS, LABELS, token_rewards)


def test_rewards_wrong_type():
    with raises(TypeError, "rewards must be a torch.Tensor, got list"):
        rift_losses.rift_loss(LOGITS, LABELS, [1.0, -0.2])
    with raises(TypeError, "rewards must be a real-valued tensor, got dtype torch.bool"):
        rift_losses.rift_loss(LOGITS, LABELS, torch.tensor([True, False]))


@pytest.mark.parametrize("fn", LOSS_FNS)
def test_unknown_reduction_and_level_list_allowed_values(fn):
    with raises(ValueError, "reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        fn(LOGITS, LABELS, REWARDS, reduction="avg")
    with raises(ValueError, "level must be one of 'token', 'sequence', got 'sample'"):
        fn(LOGITS, LABELS, REWARDS, level="sample")


def test_sequence_level_needs_batched_labels():
    with raises(ValueError, "labels must have shape (B, T) when level='sequence', got labels (3,)"):
        rift_losses.rift_loss(LOGITS[0], LABELS[0], REWARDS, level="sequence")
    with raises(
        ValueError,
        "rewards must have the shape of labels (one reward per token), got logits (3, 5), labels (3,), rewards (2,)",
    ):
        rift_losses.rift_loss(LOGITS[0], LABELS[0], REWARDS)


def test_bad_num_items_in_batch():
    with raises(ValueError, "num_items_in_batch must be a finite number >= 0, got -3"):
        rift_losses.rift_loss(LOGITS, LABELS, REWARDS, num_items_in_batch=-3)
    with raises(TypeError, "num_items_in_batch must be a number, a one-element tensor or None, got '5'"):
        rift_losses.rift_loss(LOGITS, LABELS, REWARDS, num_items_in_batch="5")
    with raises(
        ValueError,
        "num_items_in_batch must be a non-negative number or a one-element tensor, got a tensor of shape (2,)",
    ):
        rift_losses.rift_loss(LOGITS, LABELS, REWARDS, num_items_in_batch=torch.tensor([1, 2]))


def test_unknown_normalization_method_lists_allowed_values():
    with raises(ValueError, "method must be one of 'gaussian', 'gpg_mean', 'gpg_scaled', got 'zscore'"):
        rift_losses.normalize_rewards(REWARDS, [0, 0], method="zscore")
    with raises(ValueError, "method must be one of 'gaussian', 'gpg_mean', 'gpg_scaled', got 'zscore'"):
        rift_losses.normalized_reward_loss(LOGITS, LABELS, REWARDS, [0, 0], method="zscore")


def test_group_ids_of_the_wrong_length():
    with raises(ValueError, "group_ids must have length 2 like rewards, got length 3"):
        rift_losses.normalize_rewards(REWARDS, [0, 0, 1], method="gaussian")
    with raises(ValueError, "group_ids must have shape (2,) like rewards, got group_ids (3,)"):
        rift_losses.normalized_reward_loss(LOGITS, LABELS, REWARDS, torch.tensor([0, 0, 1]), method="gpg_mean")
    with raises(
        TypeError, "group_ids must be an integer or bool tensor (or a sequence of hashables), got dtype torch.float32"
    ):
        rift_losses.normalize_rewards(REWARDS, torch.tensor([0.0, 1.0]), method="gaussian")


def test_normalize_rejects_non_finite_and_2d_rewards():
    with raises(ValueError, "rewards must be finite, got nan at index [1]"):
        rift_losses.normalize_rewards(torch.tensor([1.0, float("nan")]), [0, 0], method="gaussian")
    with raises(ValueError, "rewards must have shape (N,), got (2, 1)"):
        rift_losses.normalize_rewards(torch.ones(2, 1), [0, 0], method="gaussian")
    with raises(ValueError, "rewards must have shape (B,) (one per sample) for normalized_reward_loss"):
        rift_losses.normalized_reward_loss(LOGITS, LABELS, torch.ones(2, 3), [0, 0], method="gaussian")


def test_constant_rewards_bad_input():
    with raises(TypeError, "correct must be a bool tensor, got dtype torch.int64"):
        rift_losses.constant_rewards(torch.tensor([1, 0]))
    with raises(TypeError, "correct must hold only bools, got 1 at index 0"):
        rift_losses.constant_rewards([1, 0])
    with raises(ValueError, "positive must be a finite number > 0, got -1.0"):
        rift_losses.constant_rewards([True], positive=-1.0)
    with raises(ValueError, "negative must be a finite number <= 0, got 0.2"):
        rift_losses.constant_rewards([True], negative=0.2)
    with raises(ValueError, "negative must be a finite number <= 0, got nan"):
        rift_losses.constant_rewards([True], negative=float("nan"))


def test_importing_the_core_imports_no_host_framework():
    code = (
        "import sys, rift_losses; "
        "bad = [m for m in ('transformers', 'swift', 'llamafactory', 'datasets', 'peft') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
