"""normalize_rewards against the Python reference, over random groups (hypothesis)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rift_losses

from core_reference import reference_normalize

rewards_and_groups = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from([1.0, -0.2, -0.5, 0.0, 0.7, -1.0, 0.1]), min_size=n, max_size=n),
        st.lists(st.integers(0, 5), min_size=n, max_size=n),
    )
)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(rewards_and_groups, st.sampled_from(sorted(rift_losses.NORMALIZATIONS)))
def test_matches_python_reference_and_is_never_nan(data, method):
    rewards, groups = data
    out = rift_losses.normalize_rewards(torch.tensor(rewards, dtype=torch.float64), torch.tensor(groups), method=method)
    want = reference_normalize(rewards, groups, method)
    assert all(math.isfinite(x) for x in out.tolist())
    assert out.tolist() == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("method", sorted(rift_losses.NORMALIZATIONS))
def test_group_ids_may_be_strings_tuples_or_tensors_with_same_result(method):
    rewards = torch.tensor([1.0, -0.2, 1.0, -0.2, 0.5])
    as_tensor = rift_losses.normalize_rewards(rewards, torch.tensor([10, 10, 20, 20, 20]), method=method)
    as_strings = rift_losses.normalize_rewards(rewards, ["p1", "p1", "p2", "p2", "p2"], method=method)
    as_tuples = rift_losses.normalize_rewards(rewards, [(1, "x"), (1, "x"), (2,), (2,), (2,)], method=method)
    torch.testing.assert_close(as_tensor, as_strings)
    torch.testing.assert_close(as_tensor, as_tuples)
    assert as_tensor.dtype == torch.float32


def test_equal_rewards_in_float32_give_exact_zero_not_rounding_noise():
    """mean(0.1, 0.1, 0.1) is not exactly 0.1 in floating point; the all-equal test must be exact."""
    out = rift_losses.normalize_rewards(torch.tensor([0.1, 0.1, 0.1]), [0, 0, 0], method="gaussian")
    assert out.tolist() == [0.0, 0.0, 0.0]


def test_integer_rewards_give_float32_and_empty_input_is_fine():
    out = rift_losses.normalize_rewards(torch.tensor([1, 0, 1, 0]), [0, 0, 0, 0], method="gpg_mean")
    assert out.dtype == torch.float32 and out.tolist() == pytest.approx([0.25, -0.25, 0.25, -0.25])
    assert rift_losses.normalize_rewards(torch.tensor([]), [], method="gaussian").numel() == 0


def test_input_not_modified():
    rewards = torch.tensor([1.0, -0.2, 0.3])
    rift_losses.normalize_rewards(rewards, [0, 0, 1], method="gaussian")
    assert rewards.tolist() == pytest.approx([1.0, -0.2, 0.3])
