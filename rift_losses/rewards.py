"""Reward schemes of the RIFT paper: constant rewards and group normalizations (eq. 6-8).

Notation for shapes: N responses, G groups (a group is one problem's sampled responses).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import _checks


class _GroupStats:
    """Per-response statistics of its group, in float64: mean, population std, N+/N, all-equal."""

    def __init__(self, r: torch.Tensor, inverse: torch.Tensor):
        groups = int(inverse.max()) + 1 if inverse.numel() else 0
        zeros = torch.zeros(groups, dtype=torch.float64, device=r.device)
        count = zeros.index_add(0, inverse, torch.ones_like(r))
        mean = zeros.index_add(0, inverse, r) / count
        centered = r - mean[inverse]
        var = zeros.index_add(0, inverse, centered * centered) / count
        positives = zeros.index_add(0, inverse, (r > 0).double())
        high = zeros.scatter_reduce(0, inverse, r, "amax", include_self=False)
        low = zeros.scatter_reduce(0, inverse, r, "amin", include_self=False)
        self.r = r
        self.centered = centered
        self.std = var.sqrt()[inverse]
        self.alpha = (positives / count)[inverse]
        # Exact test, not std == 0: float rounding leaves a tiny std for equal rewards.
        self.all_equal = (high == low)[inverse]


def _gaussian(s: _GroupStats) -> torch.Tensor:
    return torch.where(s.all_equal, 0.0, s.centered / torch.where(s.all_equal, 1.0, s.std))


def _gpg_mean(s: _GroupStats) -> torch.Tensor:
    return torch.where(s.all_equal, 0.0, s.alpha * s.centered)


def _gpg_scaled(s: _GroupStats) -> torch.Tensor:
    return s.alpha * s.r


#: Group normalizations of rewards, by name (paper section 4.4). The single source of truth
#: for the names the adapters and the command line accept.
NORMALIZATIONS: dict[str, Callable[[_GroupStats], torch.Tensor]] = {
    "gaussian": _gaussian,  # eq. 6: (r - mu) / sigma
    "gpg_mean": _gpg_mean,  # eq. 7: (N+/N) * (r - mu)
    "gpg_scaled": _gpg_scaled,  # eq. 8: (N+/N) * r
}


def group_index(group_ids, n: int) -> torch.Tensor:
    """Map arbitrary group ids to ``0..G-1`` (int64 tensor of length ``n``), first-seen order."""
    if isinstance(group_ids, torch.Tensor):
        if group_ids.dim() != 1 or group_ids.shape[0] != n:
            raise ValueError(f"group_ids must have shape ({n},) like rewards, got group_ids {tuple(group_ids.shape)}")
        if group_ids.is_floating_point() or group_ids.is_complex():
            raise TypeError(
                f"group_ids must be an integer or bool tensor (or a sequence of hashables), got dtype {group_ids.dtype}"
            )
        return torch.unique(group_ids, return_inverse=True)[1].long()
    if isinstance(group_ids, (str, bytes)) or not isinstance(group_ids, Sequence):
        raise TypeError(f"group_ids must be a 1-D tensor or a sequence of hashables, got {type(group_ids).__name__}")
    if len(group_ids) != n:
        raise ValueError(f"group_ids must have length {n} like rewards, got length {len(group_ids)}")
    seen: dict = {}
    return torch.tensor([seen.setdefault(g, len(seen)) for g in group_ids], dtype=torch.long)


def normalize_rewards(rewards: torch.Tensor, group_ids, *, method: str) -> torch.Tensor:
    """Normalize rewards within each group (paper eq. 6-8).

    Per group (one problem's responses), with mu the mean, sigma the population standard
    deviation, N the group size and N+ the number of responses with r > 0:

    - ``"gaussian"`` (eq. 6): ``r_hat = (r - mu) / sigma``
    - ``"gpg_mean"`` (eq. 7): ``r_hat = (N+/N) * (r - mu)``
    - ``"gpg_scaled"`` (eq. 8): ``r_hat = (N+/N) * r``

    A group whose rewards are all equal carries no relative signal: ``gaussian`` and
    ``gpg_mean`` give it 0 (never NaN); ``gpg_scaled`` gives ``r`` if r > 0 (N+/N = 1) and 0
    otherwise. Computed in float64.

    Reference: ``[(r - mean(g)) / pstdev(g) for r, g in ...]`` (``statistics.pstdev``).

    Args:
        rewards: ``(N,)`` real rewards.
        group_ids: ``(N,)`` group of each response: integer tensor, or a sequence of
            hashables (strings, ints, tuples).
        method: one of :data:`NORMALIZATIONS`.

    Returns:
        ``(N,)`` normalized rewards, in ``rewards``' floating dtype (float32 for integer input).

    Raises:
        ValueError: unknown ``method`` (allowed values listed), ``rewards`` not 1-D,
            ``group_ids`` of another length, non-finite rewards (CPU; first bad index named).
        TypeError: non-tensor rewards, floating-point group ids.
    """
    normalize = NORMALIZATIONS[_checks.one_of("method", method, NORMALIZATIONS)]
    rewards = _checks.check_real("rewards", rewards)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must have shape (N,), got {tuple(rewards.shape)}")
    _checks.check_finite("rewards", rewards)
    inverse = group_index(group_ids, rewards.shape[0]).to(rewards.device)
    out_dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    if rewards.numel() == 0:
        return torch.empty(0, dtype=out_dtype, device=rewards.device)
    return normalize(_GroupStats(rewards.double(), inverse)).to(out_dtype)


def _is_numpy(value: object) -> bool:
    """A numpy array or scalar, recognised without importing numpy."""
    return type(value).__module__ == "numpy"


def constant_rewards(correct, *, positive: float = 1.0, negative: float = -0.2) -> torch.Tensor:
    """The paper's constant reward scheme: ``positive`` for correct responses, ``negative`` else.

    Formula (section 4.1): ``r = +1.0`` if the final answer is correct, ``-0.2`` otherwise
    (the paper also reports -0.5 and -0.8, section 4.4).

    Reference: ``torch.where(correct, positive, negative).float()``

    Args:
        correct: ``(N,)`` bool tensor, numpy bool array, or a sequence of bools (Python or numpy).
        positive: reward of a correct response, > 0.
        negative: reward of a wrong response, <= 0 (0 drops wrong responses: RFT).

    Returns:
        ``(N,)`` float32.
    """
    for name, value, ok, constraint in (
        ("positive", positive, lambda v: v > 0, "be a finite number > 0"),
        ("negative", negative, lambda v: v <= 0, "be a finite number <= 0"),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value != value
            or abs(value) == float("inf")
            or not ok(value)
        ):
            raise ValueError(f"{name} must {constraint}, got {value!r}")
    if isinstance(correct, torch.Tensor):
        if correct.dtype != torch.bool:
            raise TypeError(f"correct must be a bool tensor, got dtype {correct.dtype}")
        flags = correct
    elif _is_numpy(correct) and getattr(correct, "ndim", 0) > 0:
        if correct.dtype.kind != "b":
            raise TypeError(f"correct must be a bool array, got dtype {correct.dtype}")
        flags = torch.as_tensor(correct.copy())
    else:
        if isinstance(correct, (str, bytes)) or not isinstance(correct, Sequence):
            what = type(correct).__name__
            raise TypeError(f"correct must be a bool tensor, a numpy bool array or a sequence of bools, got {what}")
        for i, c in enumerate(correct):
            if not (isinstance(c, bool) or (_is_numpy(c) and getattr(getattr(c, "dtype", None), "kind", "") == "b")):
                raise TypeError(f"correct must hold only bools, got {c!r} at index {i}")
        flags = torch.tensor([bool(c) for c in correct], dtype=torch.bool)
    return torch.where(flags, float(positive), float(negative)).float()
