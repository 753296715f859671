"""The one primitive every loss here is built on: the log-probability of each target token.

Notation for shapes: B batch, T tokens, V vocabulary, N = B*T flattened rows.
"""

from __future__ import annotations

import torch

from . import _checks

# Rows are processed in chunks of about this many logits, so the float32 working copy stays
# small (4 MiB here) however large N*V is: the full logits are never upcast at once.
_CHUNK_ELEMENTS = 1 << 20


def _row_blocks(x: torch.Tensor) -> list[torch.Tensor]:
    """2-D ``(rows, V)`` views that cover ``x``'s rows in row-major order, without copying.

    A contiguous (or row-contiguous) tensor is one block; a sliced one such as
    ``logits[:, :-1]`` is split along its leading dimensions until each part is viewable.
    """
    try:
        return [x.view(-1, x.shape[-1])]
    except RuntimeError:
        return [block for part in x.unbind(0) for block in _row_blocks(part)]


def _chunks(rows: int, vocab: int):
    step = max(1, _CHUNK_ELEMENTS // max(vocab, 1))
    for start in range(0, rows, step):
        yield start, min(start + step, rows)


class _TokenLogprobs(torch.autograd.Function):
    """log p(y_t) = logits[t, y_t] - logsumexp(logits[t, :]), chunked, float32 accumulation.

    Forward keeps only the per-row log-sum-exp (N floats); backward writes
    ``dlogits = g * (onehot(y) - softmax(logits))`` chunk by chunk in the logits' dtype, so the
    only large allocation of the backward is the logits gradient itself.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, safe_labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        vocab = logits.shape[-1]
        flat_labels = safe_labels.reshape(-1)
        lse = torch.empty(flat_labels.shape[0], dtype=torch.float32, device=logits.device)
        target = torch.empty_like(lse)
        offset = 0
        for block in _row_blocks(logits):
            for start, stop in _chunks(block.shape[0], vocab):
                rows = slice(offset + start, offset + stop)
                x = block[start:stop].float()
                torch.logsumexp(x, dim=-1, out=lse[rows])
                target[rows] = x.gather(1, flat_labels[rows, None]).squeeze(1)
            offset += block.shape[0]
        logp = (target - lse).view(safe_labels.shape) * mask
        ctx.save_for_backward(logits, safe_labels, mask, lse)
        return logp

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logp: torch.Tensor):
        logits, safe_labels, mask, lse = ctx.saved_tensors
        vocab = logits.shape[-1]
        g = (grad_logp.float() * mask).reshape(-1)
        flat_labels = safe_labels.reshape(-1)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        grad_rows = grad.view(-1, vocab)
        offset = 0
        for block in _row_blocks(logits):
            for start, stop in _chunks(block.shape[0], vocab):
                rows = slice(offset + start, offset + stop)
                # copy=True: for float32 logits .float() would alias them and the in-place ops below
                # would overwrite the caller's logits.
                p = block[start:stop].to(torch.float32, copy=True).sub_(lse[rows, None]).exp_()
                g_rows = g[rows, None]
                p.mul_(g_rows.neg())
                p.scatter_add_(1, flat_labels[rows, None], g_rows)
                grad_rows[rows].copy_(p)
            offset += block.shape[0]
        return grad, None, None


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100) -> torch.Tensor:
    """Log-probability of each target token, in float32, 0 at ignored positions.

    Formula: ``log p_t = logits[t, y_t] - logsumexp_v logits[t, v]`` for every position t whose
    label ``y_t != ignore_index``; 0 elsewhere.

    Reference: ``torch.log_softmax(logits.double(), -1).gather(-1, labels.clamp_min(0)[..., None])[..., 0] * (labels != ignore_index)``

    Labels are aligned with logits (``labels[t]`` is the token predicted by ``logits[t]``): no
    hidden shift. For Hugging Face causal-LM labels, call :func:`shift_labels` first.

    Memory: the logits are read in row chunks and upcast to float32 one chunk at a time; the
    forward keeps one float per row (its log-sum-exp) and the backward allocates only the
    logits gradient, in the logits' dtype. No host synchronisation on accelerators.

    Args:
        logits: ``(..., V)`` float32, bfloat16 or float16; any leading shape, e.g. ``(B, T, V)``.
        labels: ``(...)`` integer token ids in ``[0, V)`` or ``ignore_index``; ``logits.shape[:-1]``.
        ignore_index: label value of positions that are not targets.

    Returns:
        ``(...)`` float32, the shape of ``labels``, differentiable with respect to ``logits``.

    Raises:
        TypeError: non-tensor inputs, non-floating logits, non-integer labels.
        ValueError: shape mismatch (all shapes printed); on CPU, a label outside ``[0, V)``
            other than ``ignore_index`` (its index printed).
    """
    logits = _checks.check_logits(logits)
    labels = _checks.check_labels(labels, logits, ignore_index)
    mask = labels != ignore_index
    safe_labels = torch.where(mask, labels, 0).long()
    return _TokenLogprobs.apply(logits, safe_labels, mask)


def shift_labels(labels: torch.Tensor, *, ignore_index: int | float = -100) -> torch.Tensor:
    """Align Hugging Face causal-LM labels with the logits that predict them.

    Hugging Face models are given ``labels == input_ids`` (masked) and shift inside the loss:
    ``logits[:, t]`` predicts ``labels[:, t + 1]``. This returns
    ``out[..., t] = labels[..., t + 1]`` and ``out[..., -1] = ignore_index``, the shape of
    ``labels``, so ``token_logprobs(logits, shift_labels(labels))`` is the usual causal-LM
    target without slicing (and copying) the logits. Per-token rewards aligned with the labels
    shift the same way: ``shift_labels(token_rewards, ignore_index=0.0)``.

    Args:
        labels: ``(B, T)`` (or any shape; the last dimension is shifted).
        ignore_index: fill value for the last position.

    Returns:
        A new tensor, the shape and dtype of ``labels``.
    """
    labels = _checks.require_tensor("labels", labels)
    if labels.dim() < 1:
        raise ValueError(f"labels must have at least 1 dimension, got shape {tuple(labels.shape)}")
    out = torch.full_like(labels, ignore_index)
    out[..., :-1] = labels[..., 1:]
    return out
