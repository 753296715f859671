"""An independent float64 reference, written differently from the package: a plain loop.

One token at a time: ``log p = z[y] - logsumexp(z)`` on the float64 row, the paper's per-token
(or per-sequence) term by an ``if`` on the sign of the reward, summed in Python and divided
at the end. Differentiable (autograd through float64 ops) so gradients can be compared too.
"""

from __future__ import annotations

import itertools
import math

import torch

#: Tolerances bundled per dtype: (abs tol on scalar losses, abs tol on gradients) used in the
#: error-budget checks |impl - ref64| <= |same math in dtype - ref64| + tol.
TOLERANCES = {
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (1e-3, 1e-4),
    torch.float16: (1e-3, 1e-5),
}


def _term(loss: str, r: float, logp: torch.Tensor) -> torch.Tensor:
    if loss == "naive":
        return -r * logp
    if r > 0:
        return -r * logp
    if r < 0:
        return -r * torch.exp(logp)
    return logp * 0.0


def _targets(z: torch.Tensor, labels: torch.Tensor, rewards: torch.Tensor, ignore_index: int):
    """Yield ``(b, t, log p, r)`` for every target token, one row of float64 logits at a time."""
    B, T, _ = z.shape
    for b in range(B):
        for t in range(T):
            y = int(labels[b, t])
            if y == ignore_index:
                continue
            row = z[b, t]
            r = float(rewards[b, t]) if rewards.dim() == 2 else float(rewards[b])
            yield b, t, row[y] - torch.logsumexp(row, dim=0), r


def reference_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    rewards: torch.Tensor,
    *,
    loss: str,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch=None,
    level: str = "token",
) -> torch.Tensor:
    """The loss in float64 from ``logits`` (a float64 leaf is best for gradient checks).

    Shapes: logits (B, T, V), labels (B, T), rewards (B,) or (B, T).
    """
    z = logits if logits.dtype == torch.float64 else logits.double()
    return _reduce(
        _targets(z, labels, rewards, ignore_index),
        z.sum() * 0.0,
        loss=loss,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        level=level,
    )


def _reduce(targets, zero: torch.Tensor, *, loss: str, reduction: str, num_items_in_batch, level: str):
    """Sum the terms of ``(b, t, log p, r)`` targets (per token, or per sample of summed log p)."""
    if level == "token":
        items = [_term(loss, r, logp) for _, _, logp, r in targets]
    else:
        per_sample: dict = {}
        for b, _, logp, r in targets:
            per_sample[b] = (per_sample[b][0] + logp if b in per_sample else logp, r)
        items = [_term(loss, r, seq_logp) for seq_logp, r in per_sample.values()]
    total = sum(items, zero)
    if reduction == "sum":
        return total
    denom = float(num_items_in_batch) if num_items_in_batch is not None else len(items)
    return total / max(denom, 1.0)


def _logprob_targets(logp: torch.Tensor, mask: torch.Tensor, rewards: torch.Tensor):
    """Yield ``(b, index, log p, r)`` for every masked-in position of (B, T) or (N,) log-probs."""
    per_token = tuple(rewards.shape) == tuple(mask.shape)
    for index in itertools.product(*(range(n) for n in mask.shape)):
        if bool(mask[index]):
            r = float(rewards[index]) if per_token else float(rewards[index[0]])
            yield index[0], index, logp[index], r


def reference_logprob_loss(
    logprobs: torch.Tensor,
    mask: torch.Tensor,
    rewards: torch.Tensor,
    *,
    loss: str,
    reduction: str = "mean",
    num_items_in_batch=None,
    level: str = "token",
) -> torch.Tensor:
    """The loss in float64 from per-token log-probs (B, T) or (N,) (a float64 leaf for gradients);
    masked-out positions are never read. ``reduction="none"``: per-token terms, zeros elsewhere
    (token level only)."""
    lp = logprobs if logprobs.dtype == torch.float64 else logprobs.double()
    if reduction == "none":
        terms = [(index, _term(loss, r, x)) for _, index, x, r in _logprob_targets(lp, mask, rewards)]
        out = torch.zeros(mask.shape, dtype=torch.float64)
        for index, term in terms:
            out[index] = term.detach()
        return out
    return _reduce(
        _logprob_targets(lp, mask, rewards),
        torch.zeros((), dtype=torch.float64),
        loss=loss,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        level=level,
    )


def reference_none(logits, labels, rewards, *, loss: str, ignore_index: int = -100) -> torch.Tensor:
    """Per-token terms (B, T), float64, zeros at ignored positions (token level)."""
    out = torch.zeros(labels.shape, dtype=torch.float64)
    for b, t, logp, r in _targets(logits.double(), labels, rewards, ignore_index):
        out[b, t] = _term(loss, r, logp)
    return out


def reference_normalize(rewards: list[float], groups: list, method: str) -> list[float]:
    """Eq. 6-8 with Python floats and ``math``; all-equal groups give 0 (gaussian, gpg_mean)."""
    out = []
    for r, g in zip(rewards, groups):
        members = [x for x, h in zip(rewards, groups) if h == g]
        n = len(members)
        mu = math.fsum(members) / n
        sigma = math.sqrt(math.fsum((x - mu) ** 2 for x in members) / n)
        alpha = sum(1 for x in members if x > 0) / n
        equal = max(members) == min(members)
        if method == "gaussian":
            out.append(0.0 if equal else (r - mu) / sigma)
        elif method == "gpg_mean":
            out.append(0.0 if equal else alpha * (r - mu))
        else:
            out.append(alpha * r)
    return out
