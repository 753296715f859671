"""Reward-weighted losses of the RIFT paper (arXiv 2601.09253) over logits, labels and rewards.

Notation for shapes: B batch (samples), T tokens per sample, V vocabulary, G groups.

Every loss is an elementwise function ("head") of the target-token log-probability
``log p_t`` (:func:`rift_losses.token_logprobs`) and the reward ``r`` of its sample:

=========  ====================================  ==================
loss       per target token (``level="token"``)  paper
=========  ====================================  ==================
``naive``  ``-r * log p_t``                      eq. 1
``rift``   ``-r * log p_t`` if r > 0;            eq. 5
           ``-r * p_t`` if r < 0; 0 if r = 0
=========  ====================================  ==================

Why token level is the default. Eq. 5 is written over whole responses,
``pi(y|x) = exp(sum_t log p_t)``. For a response of a few hundred tokens that product
underflows: 300 tokens at p_t = 0.7 each give exp(-107), which is 0 in float32. The gradient
of the negative term, ``-r * pi(y|x) * grad log pi(y|x)``, vanishes with it: wrong responses
stop teaching anything. Applied per token, each negative term
``-r * p_t`` lies in ``[0, -r]`` (Theorem 3.4's boundedness, ``r * p`` in ``[r, 0]``, token by token), its gradient
``-r * p_t * grad log p_t`` never explodes (unlike the naive ``-r / p_t``, Theorem 3.2) and
does not vanish for long responses. ``level="sequence"`` is eq. 5 read literally; use it for
short responses (tens of tokens) or to reproduce the equation exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from . import _checks
from .logprobs import token_logprobs
from .rewards import normalize_rewards

REDUCTIONS = ("mean", "sum", "none")
LEVELS = ("token", "sequence")


def _naive_head(logp: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return -r * logp


def _rift_head(logp: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # r > 0: -r log p; r < 0: -r p; r == 0: 0 (r * exp(.) is 0 there).
    return -r * torch.where(r > 0, logp, logp.exp())


#: The loss variants, by name: each maps (log p, reward) to its per-item term. The single
#: source of truth for the names adapters register and error messages list.
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "naive": _naive_head,
    "rift": _rift_head,
}


class LossStats(NamedTuple):
    """Detached statistics of one loss call, for logging (0-dim tensors; no host sync).

    ``pos_loss + neg_loss`` equals the loss (same denominator). Token counts and the negative
    tokens' mean probability are token level whatever ``level`` is.
    """

    #: target tokens of samples with reward > 0
    pos_tokens: torch.Tensor
    #: target tokens of samples with reward < 0
    neg_tokens: torch.Tensor
    #: the part of the loss from positive rewards
    pos_loss: torch.Tensor
    #: the part of the loss from negative rewards
    neg_loss: torch.Tensor
    #: sum of p_t over negative target tokens (add across micro-batches, divide by neg_tokens)
    neg_prob_sum: torch.Tensor
    #: mean p_t over negative target tokens (0 when there are none)
    neg_prob_mean: torch.Tensor


def _check_options(name: str, reduction: str, level: str, num_items_in_batch) -> None:
    _checks.one_of("loss", name, LOSSES)
    _checks.one_of("reduction", reduction, REDUCTIONS)
    _checks.one_of("level", level, LEVELS)
    _checks.check_num_items(num_items_in_batch)


def _check_level_shape(level: str, targets: torch.Tensor, what: str) -> None:
    if level == "sequence" and targets.dim() != 2:
        raise ValueError(f"{what} must have shape (B, T) when level='sequence', got {what} {tuple(targets.shape)}")


def logprob_loss(
    logprobs: torch.Tensor,
    mask: torch.Tensor,
    rewards: torch.Tensor,
    *,
    loss: str = "rift",
    reduction: str = "mean",
    num_items_in_batch=None,
    level: str = "token",
    return_stats: bool = False,
):
    """A reward-weighted loss (eq. 1 or eq. 5) from per-token target log-probabilities.

    Every loss of this package is this function applied to :func:`rift_losses.token_logprobs`.
    Call it directly when the log-probs come from elsewhere, without logits: TRL's fused LM head
    (``out = model(..., labels=labels, fused_lm_head=True)``, then
    ``logprob_loss(out.log_probs, out.label_mask.bool(), rewards)``) or a fused linear kernel.

    Formula, per target token t of a sample with reward r (``level="token"``):

    - ``loss="rift"`` (eq. 5): ``-r * logp_t`` if r > 0, ``-r * exp(logp_t)`` if r < 0, 0 if r = 0;
    - ``loss="naive"`` (eq. 1): ``-r * logp_t``.

    With ``level="sequence"`` the same head is applied once per sample to
    ``log pi(y|x) = sum_t logp_t`` (eq. 5 over whole responses). ``reduction="mean"`` divides the
    sum of the terms by the number of target tokens (samples with targets, sequence level) or by
    ``num_items_in_batch``.

    Reference: ``lp = logprobs.double(); (-r * where(r > 0, lp, lp.exp()))[mask].sum() / mask.sum()``

    Shapes: B samples, T tokens per sample, N tokens in all.

    Args:
        logprobs: ``(B, T)``, or any shape with ``level="token"`` (e.g. ``(N,)`` for packed
            rows): floating-point log p of each target token, used as float32. Masked-out
            positions may hold anything (0, garbage, NaN): they never reach the loss, and their
            gradient is exactly 0.
        mask: bool, the shape of ``logprobs``: True at target tokens.
        rewards: ``(B,)`` one reward per sample (2-D ``logprobs`` only), or one per token, the
            shape of ``logprobs`` (``level="token"`` only). Any real dtype; used as float32.
            A reward at a masked-out position is ignored.
        loss: a name from :data:`rift_losses.LOSSES` (``"rift"``, ``"naive"``).
        reduction: ``"mean"`` (see above), ``"sum"``, or ``"none"``: the per-token terms, the
            shape of ``logprobs`` with zeros at masked-out positions (per-sample ``(B,)`` with
            ``level="sequence"``).
        num_items_in_batch: the denominator of ``"mean"`` when given: Hugging Face's count of
            target tokens (sequences, with ``level="sequence"``) over all micro-batches and
            ranks of one optimizer step, so that gradient accumulation and data parallelism
            equal one large batch. A number or a one-element tensor.
        level: ``"token"`` (default) or ``"sequence"`` (see the module docstring).
        return_stats: also return a :class:`LossStats` of detached statistics.

    Returns:
        The loss, float32 (0-dim unless ``reduction="none"``), or ``(loss, LossStats)``. No
        target token gives a loss of 0 still connected to ``logprobs`` (its gradient is zeros).

    Raises:
        TypeError: non-tensor inputs, non-floating ``logprobs``, non-bool ``mask``, non-real
            ``rewards``, a ``num_items_in_batch`` that is not a number or tensor.
        ValueError: shape mismatches (shapes printed); ``loss``, ``reduction`` or ``level`` not
            one of the allowed names (listed); a negative ``num_items_in_batch``; on CPU
            tensors, non-finite rewards (first bad index printed).
    """
    _check_options(loss, reduction, level, num_items_in_batch)
    logprobs, mask = _checks.check_logprobs(logprobs, mask)
    _check_level_shape(level, mask, "logprobs")
    shapes = f"logprobs {tuple(logprobs.shape)}"
    rewards = _checks.check_rewards(
        rewards, mask, per_token_ok=(level == "token"), shapes=shapes, targets_name="logprobs"
    )
    return _loss_from_logprobs(
        LOSSES[loss],
        logprobs,
        mask,
        rewards,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        level=level,
        return_stats=return_stats,
    )


def _loss_from_logprobs(head, logprobs, mask, rewards, *, reduction, num_items_in_batch, level, return_stats):
    """:func:`logprob_loss` on validated inputs (``rewards`` float32 on the mask's device)."""
    # Masked positions are zeroed first: whatever they hold (0, garbage, NaN) never reaches a term or a gradient.
    logp = torch.where(mask, logprobs.float(), 0.0)
    r_tok = rewards[:, None].expand_as(logp) if rewards.shape != logp.shape else rewards
    r_tok = torch.where(mask, r_tok, 0.0)  # a reward at an ignored position never reaches a gradient

    if level == "token":
        terms = head(logp, r_tok) * mask
        r_item, item_mask = r_tok, mask
    else:
        item_mask = mask.any(dim=-1)  # samples with at least one target token
        r_item = torch.where(item_mask, rewards, 0.0)
        terms = head(logp.sum(dim=-1), r_item) * item_mask

    if num_items_in_batch is not None:
        denom = torch.as_tensor(num_items_in_batch, dtype=torch.float32, device=terms.device)
    else:
        denom = item_mask.sum()
    denom = denom.clamp(min=1)

    if reduction == "none":
        loss = terms
    elif reduction == "sum":
        loss = terms.sum()
    else:
        loss = terms.sum() / denom
    if not return_stats:
        return loss

    with torch.no_grad():
        scale = 1.0 / denom if reduction == "mean" else torch.ones((), device=terms.device)
        pos_tok = mask & (r_tok > 0)
        neg_tok = mask & (r_tok < 0)
        neg_tokens = neg_tok.sum()
        neg_prob_sum = (logp.exp() * neg_tok).sum()
        stats = LossStats(
            pos_tokens=pos_tok.sum(),
            neg_tokens=neg_tokens,
            pos_loss=(terms * (r_item > 0)).sum() * scale,
            neg_loss=(terms * (r_item < 0)).sum() * scale,
            neg_prob_sum=neg_prob_sum,
            neg_prob_mean=neg_prob_sum / neg_tokens.clamp(min=1),
        )
    return loss, stats


def _reward_weighted_loss(
    name: str,
    logits: torch.Tensor,
    labels: torch.Tensor,
    rewards: torch.Tensor,
    *,
    ignore_index: int,
    reduction: str,
    num_items_in_batch,
    level: str,
    return_stats: bool,
    impl: str,
    inplace_grad: bool,
):
    """``token_logprobs`` + :func:`logprob_loss`, validated in terms of logits and labels."""
    _check_options(name, reduction, level, num_items_in_batch)
    logits = _checks.check_logits(logits)
    labels = _checks.check_labels(labels, logits, ignore_index)
    _check_level_shape(level, labels, "labels")
    shapes = f"logits {tuple(logits.shape)}, labels {tuple(labels.shape)}"
    rewards = _checks.check_rewards(rewards, labels, per_token_ok=(level == "token"), shapes=shapes)

    logp = token_logprobs(logits, labels, ignore_index=ignore_index, impl=impl, inplace_grad=inplace_grad)
    return _loss_from_logprobs(
        LOSSES[name],
        logp,
        labels != ignore_index,
        rewards,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        level=level,
        return_stats=return_stats,
    )


_ARGS_DOC = """
    Args:
        logits: ``(B, T, V)`` (or ``(N, V)``) float32, bfloat16 or float16.
        labels: ``(B, T)`` (or ``(N,)``) token ids aligned with ``logits`` (no hidden shift; see
            :func:`rift_losses.shift_labels`), ``ignore_index`` at non-target positions.
        rewards: ``(B,)`` one reward per sample, or ``(B, T)`` one per token (packed batches,
            process rewards; ``level="token"`` only). Any real dtype; used as float32.{extra}
        ignore_index: label value of non-target positions.
        reduction: ``"mean"`` divides the sum by the number of target tokens (samples with
            ``level="sequence"``) or by ``num_items_in_batch``; ``"sum"``; ``"none"`` returns
            the per-token terms ``(B, T)`` with zeros at ignored positions (per-sample ``(B,)``
            with ``level="sequence"``).
        num_items_in_batch: the denominator of ``"mean"`` when given: Hugging Face's count of
            target tokens over all micro-batches and ranks of one optimizer step, so that
            gradient accumulation and data parallelism equal one large batch. With
            ``level="sequence"`` it counts sequences. Number or one-element tensor.
        level: ``"token"`` (default) or ``"sequence"``; see the module docstring.
        return_stats: also return a :class:`LossStats` of detached statistics.
        impl: implementation of :func:`rift_losses.token_logprobs` (``"auto"``, ``"torch"``,
            ``"triton"``; see :data:`rift_losses.IMPLS`).
        inplace_grad: write the logits gradient over the logits buffer (saves one
            logits-sized allocation); only when nothing uses ``logits`` after this loss, see
            :func:`rift_losses.token_logprobs`.

    Returns:
        The loss (0-dim unless ``reduction="none"``), or ``(loss, LossStats)``. A batch with no
        target token gives a loss of 0 that is still connected to ``logits``.

    Raises:
        TypeError: non-tensor or wrongly typed inputs.
        ValueError: shape mismatches (all shapes printed); unknown ``reduction``/``level``;
            on CPU tensors, labels outside ``[0, V)`` and non-finite rewards (first bad index
            printed). On accelerators the value checks are skipped to avoid a host sync: the
            adapters validate rewards when the dataset is loaded.
"""


def naive_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    rewards: torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch=None,
    level: str = "token",
    return_stats: bool = False,
    impl: str = "auto",
    inplace_grad: bool = False,
):
    """Naive signed reward-weighted log-likelihood (paper eq. 1); unbounded below for r < 0.

    Formula (eq. 1): ``L = -E[r * log pi(y|x)]``; per target token ``-r * log p_t``.
    Kept as the baseline that Theorem 3.2 shows collapsing: as a negative sample's p -> 0 the
    loss goes to -inf and its gradient ``-r / p`` explodes.

    Reference:
    ``(-r[:, None] * log_softmax(logits.double(), -1).gather(-1, y[..., None])[..., 0])[mask].sum() / mask.sum()``
    """
    return _reward_weighted_loss(
        "naive",
        logits,
        labels,
        rewards,
        ignore_index=ignore_index,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        level=level,
        return_stats=return_stats,
        impl=impl,
        inplace_grad=inplace_grad,
    )


def rift_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    rewards: torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch=None,
    level: str = "token",
    return_stats: bool = False,
    impl: str = "auto",
    inplace_grad: bool = False,
):
    """RIFT loss (paper eq. 5): log-likelihood for positive rewards, linear in p for negative.

    Formula (eq. 5): ``L = -E_{D+}[r * log pi(y|x)] - E_{D-}[r * pi(y|x)]``; per target token
    ``-r * log p_t`` if r > 0, ``-r * p_t`` if r < 0, 0 if r = 0. Bounded below: every term is
    >= 0, the negative ones lie in ``[0, -r]`` (Theorem 3.4); with every r = 1 it is standard
    cross-entropy.

    Reference: ``lp = log_softmax(logits.double(), -1).gather(-1, y[..., None])[..., 0]``, then
    ``(-r * where(r > 0, lp, lp.exp()))[mask].sum() / mask.sum()``
    """
    return _reward_weighted_loss(
        "rift",
        logits,
        labels,
        rewards,
        ignore_index=ignore_index,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        level=level,
        return_stats=return_stats,
        impl=impl,
        inplace_grad=inplace_grad,
    )


def normalized_reward_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    rewards: torch.Tensor,
    group_ids,
    *,
    method: str,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch=None,
    level: str = "token",
    return_stats: bool = False,
    impl: str = "auto",
    inplace_grad: bool = False,
):
    """RIFT (eq. 5) on rewards normalized within the groups present in this call (eq. 6-8).

    Formula: ``rift_loss(logits, labels, normalize_rewards(rewards, group_ids, method=method))``.
    The paper normalizes over *all* responses of a problem; a batch usually holds only some of
    them, so for training prefer normalizing the whole dataset once with
    :func:`rift_losses.normalize_rewards` (the adapters do) and calling :func:`rift_loss`.

    Grouping calls ``torch.unique`` (a host sync on accelerators): this is not the hot path
    the adapters use.

    Reference: ``rift_loss(logits, labels, normalize_rewards(rewards, group_ids, method=method))``
    """
    rewards = _checks.check_real("rewards", rewards)
    if rewards.dim() != 1:
        raise ValueError(
            f"rewards must have shape (B,) (one per sample) for normalized_reward_loss, "
            f"got rewards {tuple(rewards.shape)}, labels {tuple(getattr(labels, 'shape', ()))}"
        )
    normalized = normalize_rewards(rewards, group_ids, method=method)
    return _reward_weighted_loss(
        "rift",
        logits,
        labels,
        normalized,
        ignore_index=ignore_index,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        level=level,
        return_stats=return_stats,
        impl=impl,
        inplace_grad=inplace_grad,
    )


naive_loss.__doc__ += _ARGS_DOC.format(extra="")
rift_loss.__doc__ += _ARGS_DOC.format(extra="")
normalized_reward_loss.__doc__ += _ARGS_DOC.format(
    extra="""
            Here ``(B,)`` only: normalization is per sample.
        group_ids: ``(B,)`` group of each sample (integer tensor, or a sequence of hashables).
        method: ``"gaussian"`` (eq. 6), ``"gpg_mean"`` (eq. 7) or ``"gpg_scaled"`` (eq. 8)."""
)
