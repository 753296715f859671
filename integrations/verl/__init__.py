"""verl adapter: RIFT as a verl 0.9 policy loss, and the paper's reward normalizations as advantage estimators.

Loaded by verl itself: ``import verl`` loads every entry point of the group ``verl.plugins``
(pyproject.toml declares ``rift = "rift_losses.integrations.verl"``), in the driver and in every Ray
worker, so nothing is patched and no flag is needed. Importing this module registers:

- **policy losses** (``actor_rollout_ref.actor.policy_loss.loss_mode``), one per core loss of
  :data:`rift_losses.LOSSES`: ``rift`` (eq. 5) and ``rift_naive`` (eq. 1). The reward of a token is
  verl's advantage of that token (``advantages``, ``(B, T)``), so the normalization is the advantage
  estimator's;
- **advantage estimators** (``algorithm.adv_estimator``) that give RIFT the paper's rewards: ``rift``
  (the raw outcome reward, ``r = sum_t token_level_rewards``, on every response token: the paper's
  +1 / -0.2 when the reward function returns those) and ``rift_<method>`` for each of
  :data:`rift_losses.NORMALIZATIONS` (eq. 6-8, within each prompt's group of responses, verl's
  ``uid``), computed by the core's :func:`rift_losses.normalize_rewards`. verl's own ``grpo``
  estimator (``(r - mean) / (std + 1e-6)``, sample std) with ``loss_mode=rift`` is RIFT on
  GRPO-normalized rewards.

The loss of one micro-batch is ``agg_loss(head(log_prob, A), response_mask, loss_agg_mode,
**config.global_batch_info)``: verl's own aggregation, so every ``loss_agg_mode`` and verl's
global-batch normalization over data-parallel ranks hold as for its built-in losses. RIFT has no
importance ratio: ``old_log_prob`` is not used in the loss (it only feeds the ``actor/ppo_kl``
metric, which shows how stale the samples are when ``ppo_epochs > 1`` or
``ppo_mini_batch_size < train_batch_size``); ``rollout_is_weights`` (verl's rollout correction),
when given, multiply each token's term.

Metrics, beside verl's ``actor/pg_loss``: ``rift/pos_loss`` and ``rift/neg_loss`` (the parts of
``pg_loss`` from tokens with positive and negative advantage; they add up to it), ``rift/pos_tokens``,
``rift/neg_tokens`` and ``rift/neg_prob`` (mean p of the negative tokens), as the other hosts log.

Notation: B responses of a micro-batch, T response tokens.
"""

from __future__ import annotations

from functools import partial

import torch

from rift_losses import LOSSES, NORMALIZATIONS, logprob_loss, normalize_rewards

#: verl policy-loss name -> core loss name (``rift`` for the core's ``rift``, ``rift_<name>`` otherwise).
POLICY_LOSSES = {("rift" if name == "rift" else f"rift_{name}"): name for name in LOSSES}
#: verl advantage-estimator name -> normalization (None: the raw outcome reward).
ADVANTAGE_ESTIMATORS = {"rift": None, **{f"rift_{method}": method for method in NORMALIZATIONS}}


def rift_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config=None,
    rollout_is_weights: torch.Tensor | None = None,
    *,
    loss: str = "rift",
):
    """RIFT (eq. 5; eq. 1 for ``loss="naive"``) as a verl policy loss, aggregated by verl's ``agg_loss``.

    Formula: ``l_t = -A_t log p_t`` if A_t > 0, ``-A_t p_t`` if A_t < 0, 0 if A_t = 0 (``A`` verl's
    advantage, times ``rollout_is_weights`` when given); ``loss = agg_loss(l, response_mask,
    loss_agg_mode, **config.global_batch_info)``.

    Reference: ``lp = log_prob.double(); l = -A * where(A > 0, lp, lp.exp()); (l * m).sum() / m.sum()``
    (``token-mean`` on one rank).

    Args:
        old_log_prob: ``(B, T)`` log-probs at sampling (not in the loss; ``actor/ppo_kl`` only).
        log_prob: ``(B, T)`` the current policy's log-probs of the response tokens.
        advantages: ``(B, T)`` verl's advantages (the rewards of :data:`ADVANTAGE_ESTIMATORS`).
        response_mask: ``(B, T)`` True (or 1) at response tokens.
        loss_agg_mode: verl's ``token-mean``, ``token-sum``, ``seq-mean-token-sum``,
            ``seq-mean-token-mean`` or ``seq-mean-token-sum-norm``.
        config: verl's ``ActorConfig`` (its ``global_batch_info``), or None (this micro-batch alone).
        rollout_is_weights: ``(B, T)`` verl's rollout-correction weights, or None.
        loss: a core loss name (:data:`rift_losses.LOSSES`).

    Returns:
        ``(loss, metrics)``: the 0-dim loss and a dict of floats.
    """
    from verl.trainer.ppo.core_algos import agg_loss

    mask = response_mask.bool()
    rewards = advantages.float()
    if rollout_is_weights is not None:
        rewards = rewards * rollout_is_weights.float()
    terms, stats = logprob_loss(log_prob, mask, rewards, loss=loss, reduction="none", return_stats=True)
    batch_info = dict(getattr(config, "global_batch_info", None) or {}) if config is not None else {}
    aggregate = partial(agg_loss, loss_mask=mask, loss_agg_mode=loss_agg_mode, **batch_info)
    pg_loss = aggregate(terms)
    with torch.no_grad():
        r_tok = torch.where(mask, rewards, 0.0)
        pos_loss = aggregate(terms * (r_tok > 0))
        neg_loss = aggregate(terms * (r_tok < 0))
        stale = torch.where(mask, old_log_prob.float() - log_prob.detach().float(), 0.0).sum() / mask.sum().clamp(min=1)
    metrics = {
        "rift/pos_loss": pos_loss.item(),
        "rift/neg_loss": neg_loss.item(),
        "rift/pos_tokens": stats.pos_tokens.item(),
        "rift/neg_tokens": stats.neg_tokens.item(),
        "actor/ppo_kl": stale.item(),
    }
    if stats.neg_tokens.item() > 0:
        metrics["rift/neg_prob"] = stats.neg_prob_mean.item()
    return pg_loss, metrics


def rift_advantages(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index=None,
    config=None,
    *,
    normalization: str | None = None,
    **unused,
):
    """The paper's rewards as verl advantages: one per response, on each of its tokens.

    Formula: ``r_i = sum_t token_level_rewards[i, t]``; with ``normalization``,
    ``normalize_rewards(r, index, method=normalization)`` within each ``uid`` group (eq. 6-8);
    ``A[i, t] = r_i * response_mask[i, t]``.

    Reference: ``token_level_rewards.sum(-1, keepdim=True) * response_mask`` (no normalization).

    Args:
        token_level_rewards: ``(B, T)`` verl's rewards (an outcome reward sits on one token).
        response_mask: ``(B, T)``.
        index: ``(B,)`` group of each response (verl's ``uid``: the prompt), needed to normalize.
        normalization: a name of :data:`rift_losses.NORMALIZATIONS`, or None.

    Returns:
        ``(advantages, returns)``: both ``(B, T)`` float32, equal (as verl's outcome estimators return).
    """
    with torch.no_grad():
        scores = token_level_rewards.double().sum(dim=-1)
        if normalization is not None:
            if index is None:
                raise ValueError(
                    f"index must give each response's group (verl's uid) for adv_estimator='rift_{normalization}', "
                    "got None"
                )
            scores = normalize_rewards(scores, [str(g) for g in index], method=normalization)
        advantages = (scores[:, None] * response_mask.double()).to(torch.float32)
    return advantages, advantages


def register() -> None:
    """Register :data:`POLICY_LOSSES` and :data:`ADVANTAGE_ESTIMATORS` with verl (idempotent)."""
    from verl.trainer.ppo import core_algos

    for name, loss in POLICY_LOSSES.items():
        if name not in core_algos.POLICY_LOSS_REGISTRY:
            core_algos.register_policy_loss(name)(partial(rift_policy_loss, loss=loss))
    for name, method in ADVANTAGE_ESTIMATORS.items():
        if name not in core_algos.ADV_ESTIMATOR_REGISTRY:
            core_algos.register_adv_est(name)(partial(rift_advantages, normalization=method))


register()
