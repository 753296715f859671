"""The loss of one micro-batch as every host computes it, and the two numbers around it.

- :func:`batch_loss`: from a host's model output (unshifted labels, the batch's rewards) to
  the core's :func:`rift_losses.logprob_loss`: shift the labels (and per-token rewards) like
  Hugging Face's causal-LM loss, :func:`rift_losses.token_logprobs` over the logits (or the
  log-probs a fused head already gave), the in-place-gradient decision.
- :func:`logged_loss_scale`: what the Trainer multiplies the loss by before it logs it (and
  runs backward), so the logged statistics add up to the logged ``loss``.
- :func:`sequence_proxies`: ``level="sequence"`` divides by the number of responses of the
  optimizer step; the Trainer counts (and gathers over ranks) them as it counts tokens when
  ``_get_num_items_in_batch`` gets one proxy target per response.

Notation: B samples, T tokens (unshifted), V vocabulary.
"""

from __future__ import annotations

import torch

from rift_losses import logprob_loss, shift_labels, token_logprobs

#: Hugging Face's (and every host's) label padding.
IGNORE_INDEX = -100


def inplace_grad_allowed(enabled: bool, *, training: bool, logits: torch.Tensor) -> bool:
    """Whether the logits gradient may be written over the logits buffer in this call.

    Only when the run enables it, in a training step that will run backward (grad enabled,
    logits that require grad): evaluation and prediction keep the logits and run no backward.
    The caller must also know that nothing reads the logits after the backward.
    """
    return bool(enabled) and training and torch.is_grad_enabled() and logits.requires_grad


def batch_loss(
    labels: torch.Tensor,
    rewards: torch.Tensor,
    *,
    loss: str,
    level: str,
    num_items_in_batch=None,
    logits: torch.Tensor | None = None,
    inplace_grad: bool = False,
    logprobs: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    token_weights: torch.Tensor | None = None,
):
    """The RIFT loss of one micro-batch and its :class:`rift_losses.LossStats`.

    Formula: ``sum_t head(log p_t, r_t) / num_items_in_batch`` over target tokens t (eq. 5 for
    ``loss="rift"``, eq. 1 for ``"naive"``), or over responses with ``level="sequence"``.

    Reference: ``rift_losses.logprob_loss(token_logprobs(logits, shift_labels(labels)), mask, rewards, ...)``

    Args:
        labels: ``(B, T)`` the host's unshifted labels, -100 at non-target positions.
        rewards: ``(B,)`` one per sample, or ``(B, T)`` one per token aligned with ``labels``
            (packed / padding-free batches: shifted here like the labels).
        loss: a core loss name (:data:`rift_losses.LOSSES`).
        level: ``"token"`` or ``"sequence"``.
        num_items_in_batch: the Trainer's denominator for the optimizer step, or None (this
            batch's own count).
        logits: ``(B, T, V)``, unshifted; or give ``logprobs`` and ``mask`` instead.
        inplace_grad: passed to :func:`rift_losses.token_logprobs` (see :func:`inplace_grad_allowed`).
        logprobs, mask: ``(B, T-1)`` target log-probs and target mask already aligned with the
            next token (a fused LM head's output).
        token_weights: ``(B, T-1)`` per-token weights already shifted (MS-Swift's ``loss_scale``):
            each token's reward is multiplied by its weight.

    Returns:
        ``(loss, stats)``: the 0-dim loss and its detached statistics.
    """
    if (logits is None) == (logprobs is None):
        raise ValueError(
            f"batch_loss needs exactly one of logits or logprobs, got {'both' if logits is not None else 'neither'}"
        )
    device = (logits if logits is not None else logprobs).device
    rewards = rewards.to(device=device, dtype=torch.float32)
    if rewards.dim() == 2:  # one per token, aligned with the unshifted labels: shift like them
        rewards = shift_labels(rewards, ignore_index=0.0) if logits is not None else rewards[:, 1:]
    if logits is not None:
        targets = shift_labels(labels.to(device), ignore_index=IGNORE_INDEX)
        logprobs = token_logprobs(logits, targets, ignore_index=IGNORE_INDEX, inplace_grad=inplace_grad)
        mask = targets != IGNORE_INDEX
    if token_weights is not None:
        weights = token_weights.to(device=device, dtype=torch.float32).reshape(mask.shape)
        rewards = (rewards[:, None] if rewards.dim() == 1 else rewards) * weights
    return logprob_loss(
        logprobs,
        mask,
        rewards,
        loss=loss,
        reduction="mean",
        num_items_in_batch=num_items_in_batch,
        level=level,
        return_stats=True,
    )


def logged_loss_scale(trainer, num_items_in_batch, *, counts_items: bool | None = None) -> float:
    """What the Trainer multiplies a loss over ``num_items_in_batch`` by (the rule of transformers 5.x).

    ``transformers.Trainer.compute_loss``: when ``args.average_tokens_across_devices`` and
    ``(model_accepts_loss_kwargs or compute_loss_func)`` and ``num_items_in_batch is not None``,
    the loss is multiplied by ``num_processes // tp_size`` (``n_gpu`` with ``DataParallel``):
    ``num_items_in_batch`` then counts every rank's items, and DDP averages the gradients.
    ``counts_items`` replaces the middle clause for a host that restates the rule
    (MS-Swift's ``Seq2SeqTrainer.compute_loss``: ``model_accepts_loss_kwargs`` alone; a trainer
    that returns the RIFT loss from its own ``compute_loss``: True). Returns 1.0 otherwise.
    """
    args = getattr(trainer, "args", None)
    if counts_items is None:
        counts_items = bool(
            getattr(trainer, "model_accepts_loss_kwargs", False)
            or getattr(trainer, "compute_loss_func", None) is not None
        )
    if not (getattr(args, "average_tokens_across_devices", False) and counts_items and num_items_in_batch is not None):
        return 1.0
    n_gpu = getattr(args, "n_gpu", 1) or 1
    if n_gpu > 1:
        return float(n_gpu)
    tp_size = trainer.get_tp_size() if hasattr(trainer, "get_tp_size") else 1
    return float(trainer.accelerator.num_processes // tp_size)


def sequence_proxies(batch_samples) -> list[dict]:
    """One proxy ``{"labels": (B, 2)}`` per micro-batch: one target per sample that has a target token.

    ``Trainer._get_num_items_in_batch`` counts ``labels[..., 1:] != -100`` (and gathers the
    count over ranks with ``average_tokens_across_devices``); on these proxies it counts the
    responses of the optimizer step, the denominator of ``level="sequence"``.
    """
    proxies = []
    for batch in batch_samples:
        labels = batch.get("labels") if hasattr(batch, "get") else None  # a BatchEncoding, not only a dict
        if labels is None:
            continue
        has_target = (labels[..., 1:] != IGNORE_INDEX).reshape(labels.shape[0], -1).any(-1, keepdim=True)
        proxy = torch.full((labels.shape[0], 2), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
        proxy[:, 1:] = torch.where(has_target, 0, IGNORE_INDEX).to(labels.dtype)
        proxies.append({"labels": proxy})
    return proxies
