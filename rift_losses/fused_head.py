"""The LM head and the target log-probs fused in chunks: the ``(N, V)`` logits are never built whole.

Notation for shapes: B batch, T tokens, N = B*T rows (positions), H hidden size, V vocabulary,
M target rows (label != ignore_index), C rows per chunk.

:func:`fused_token_logprobs` is :func:`rift_losses.token_logprobs` over ``hidden @ weight.T + bias``
computed ``chunk_size`` target rows at a time, in forward and again in backward;
:func:`fused_loss` is :func:`rift_losses.logprob_loss` on top of it, so every option of the loss
(loss name, per-sample/per-token rewards, ``level``, ``reduction``, ``num_items_in_batch``,
statistics) works unchanged.

Per chunk of target rows, forward: ``z = h_c @ W.T + b`` in the hidden states' dtype (the
matmul the model's own LM head runs), then the log-prob backend of ``impl`` (the Triton kernel
on CUDA, PyTorch elsewhere) gives ``log p`` and the row's log-sum-exp (one float32 per row
kept). Backward recomputes ``z`` (the price: one more ``2*C*H*V`` matmul per chunk), overwrites
it with ``dz = g * (onehot(y) - softmax(z))`` (anchors.md: the backward of every loss here),
then ``dh_c = dz @ W`` and ``dW += dz.T @ h_c``, ``db += dz.sum(0)``.

Memory above the inputs: forward, one chunk's logits and their float32 log-softmax scratch;
backward, the same plus ``dh`` ``(N, H)`` and ``dW`` ``(V, H)`` (float32 accumulator for
bfloat16/float16 weights, so the chunked sum is rounded once, at the end; off CUDA each chunk's
``dz`` is upcast to float32 for that matmul). Rows whose label is ``ignore_index`` are never
projected (their log-prob is 0 and their gradients exactly 0); selecting the target rows costs
one device-to-host synchronisation per call on accelerators.

Gradient accumulation, DDP and ZeRO: this is a plain autograd function of ``hidden``,
``weight`` and ``bias`` (nothing is computed ahead of the upstream gradient), so it composes
with any loss scaling, ``backward`` hook and accumulation. Called inside the LM head module's
forward (as the adapters do), DeepSpeed ZeRO-3 gathers the weight for it in forward and
backward as for a plain ``nn.Linear``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import _checks
from .logprobs import _backend, _resolve_impl
from .losses import LOSSES, _check_level_shape, _check_options, _loss_from_logprobs

#: Default logits elements per chunk, by device type (rows per chunk = this // V, at least 1):
#: 32 MiB of float32 scratch on CPU, 512 MiB of bfloat16 logits on accelerators.
CHUNK_ELEMENTS = {"cpu": 1 << 23}
CHUNK_ELEMENTS_DEFAULT = 1 << 28


@dataclass(frozen=True)
class _Options:
    impl: str  # "torch" or "triton", resolved
    chunk_size: int  # target rows per chunk


def default_chunk_size(vocab: int, device: torch.device | str) -> int:
    """Target rows per chunk when ``chunk_size=None``: :data:`CHUNK_ELEMENTS` logits per chunk."""
    elements = CHUNK_ELEMENTS.get(torch.device(device).type, CHUNK_ELEMENTS_DEFAULT)
    return max(1, elements // max(1, vocab))


def _chunks(rows: torch.Tensor, size: int):
    for start in range(0, rows.numel(), size):
        yield start, rows[start : start + size]


def _accumulate_outer(dw: torch.Tensor, dz: torch.Tensor, h: torch.Tensor) -> None:
    """``dw += dz.T @ h`` with float32 accumulation for low-precision ``dz``/``h`` (``dw`` float32):
    each chunk's product is summed unrounded, so the chunked ``dW`` is rounded once, at the end."""
    if dw.dtype == dz.dtype:
        dw.addmm_(dz.t(), h)
    elif dz.is_cuda:
        try:  # bfloat16/float16 inputs, float32 output: the tensor-core matmul without rounding
            dw.add_(torch.mm(dz.t(), h, out_dtype=dw.dtype))
        except (TypeError, RuntimeError):
            dw.addmm_(dz.t().to(dw.dtype), h.to(dw.dtype))
    else:
        dw.addmm_(dz.t().to(dw.dtype), h.to(dw.dtype))


class _FusedTokenLogprobs(torch.autograd.Function):
    """log p(y_n) = z_n[y_n] - logsumexp(z_n), z_n = W h_n + b, a chunk of target rows at a time.

    Saves ``hidden``, ``weight``, ``bias`` (references, no copies), the target rows and their
    log-sum-exp (M floats); backward recomputes each chunk's logits.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, safe_labels, mask, opts: _Options):
        h2 = hidden.reshape(-1, hidden.shape[-1])
        y = safe_labels.reshape(-1)
        rows = mask.reshape(-1).nonzero().squeeze(1)  # target rows only: ignored rows are never projected
        backend = _backend(opts.impl)
        logp = torch.zeros(y.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty(rows.shape[0], dtype=torch.float32, device=hidden.device)
        for start, idx in _chunks(rows, opts.chunk_size):
            z = F.linear(h2.index_select(0, idx), weight, bias)
            y_c = y.index_select(0, idx)
            lp_c, lse_c = backend.forward(z, y_c, torch.ones_like(y_c, dtype=torch.bool))
            logp.index_copy_(0, idx, lp_c.float())
            lse[start : start + idx.shape[0]] = lse_c
            del z
        ctx.save_for_backward(hidden, weight, bias, y, rows, lse)
        ctx.opts = opts
        return logp.view(safe_labels.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logp):
        hidden, weight, bias, y, rows, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        if not (need_h or need_w or need_b):
            return None, None, None, None, None, None
        backend = _backend(ctx.opts.impl)
        h2 = hidden.reshape(-1, hidden.shape[-1])
        g = grad_logp.reshape(-1).to(torch.float32)
        dh = torch.zeros_like(h2) if need_h else None
        accum = torch.float32 if weight.dtype in (torch.bfloat16, torch.float16) else weight.dtype
        dw = torch.zeros(weight.shape, dtype=accum, device=weight.device) if need_w else None
        db = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for start, idx in _chunks(rows, ctx.opts.chunk_size):
            h_c = h2.index_select(0, idx)
            z = F.linear(h_c, weight, bias)
            y_c = y.index_select(0, idx)
            lse_c = lse[start : start + idx.shape[0]]
            g_c = g.index_select(0, idx)
            # dz = g * (onehot(y) - softmax(z)), written over z (every row is read before it is written)
            backend.backward(z, y_c, torch.ones_like(y_c, dtype=torch.bool), lse_c, g_c, z)
            if need_h:
                dh.index_copy_(0, idx, z @ weight)
            if need_w:
                _accumulate_outer(dw, z, h_c)
            if need_b:
                db.add_(z.sum(0, dtype=torch.float32))
            del z
        dh = dh.view(hidden.shape) if need_h else None
        dw = dw.to(weight.dtype) if need_w else None
        db = db.to(bias.dtype) if need_b else None
        return dh, dw, db, None, None, None


def _check_head(hidden, weight, bias):
    hidden = _checks.require_tensor("hidden", hidden)
    weight = _checks.require_tensor("weight", weight)
    if not hidden.is_floating_point():
        raise TypeError(f"hidden must be a floating-point tensor, got dtype {hidden.dtype}")
    if hidden.dim() < 2:
        raise ValueError(f"hidden must have shape (..., H) with at least 2 dimensions, got shape {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1] or weight.shape[0] == 0:
        raise ValueError(
            f"weight must have shape (V, H) with V > 0 and H = hidden.shape[-1], "
            f"got hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}"
        )
    if weight.dtype != hidden.dtype or weight.device != hidden.device:
        raise TypeError(
            f"weight must have the dtype and device of hidden, got hidden {hidden.dtype} on {hidden.device}, "
            f"weight {weight.dtype} on {weight.device}"
        )
    if bias is not None:
        bias = _checks.require_tensor("bias", bias)
        if tuple(bias.shape) != (weight.shape[0],) or bias.dtype != weight.dtype or bias.device != weight.device:
            raise ValueError(
                f"bias must be None or have shape (V,) and weight's dtype and device, got weight "
                f"{tuple(weight.shape)} {weight.dtype} on {weight.device}, bias {tuple(bias.shape)} {bias.dtype} "
                f"on {bias.device}"
            )
    return hidden, weight, bias


def _check_chunk_size(chunk_size) -> None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size!r}")


def _prepare(hidden, weight, labels, bias, ignore_index, chunk_size, impl):
    hidden, weight, bias = _check_head(hidden, weight, bias)
    _check_chunk_size(chunk_size)
    # The label checks of token_logprobs, against the shape the logits would have.
    # (a zero-stride view on hidden's device: the shape and the device, nothing allocated)
    labels = _checks.check_labels(
        labels, hidden.new_empty(()).expand(*hidden.shape[:-1], weight.shape[0]), ignore_index
    )
    if labels.device != hidden.device:
        raise ValueError(
            f"labels must be on the device of hidden, got hidden on {hidden.device}, labels on {labels.device}"
        )
    probe = torch.empty(0, dtype=hidden.dtype, device=hidden.device)
    opts = _Options(
        impl=_resolve_impl(impl, probe),
        chunk_size=chunk_size or default_chunk_size(weight.shape[0], hidden.device),
    )
    mask = labels != ignore_index
    safe_labels = torch.where(mask, labels, 0).long()
    return hidden, weight, bias, safe_labels, mask, opts


def fused_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Log-probability of each target token under the LM head ``hidden @ weight.T + bias``, in chunks.

    Formula: ``log p_t = z_t[y_t] - logsumexp_v z_t[v]`` with ``z_t = W h_t + b`` for every
    position t whose label ``y_t != ignore_index``; 0 elsewhere. Gradients:
    ``dz_t = g_t * (onehot(y_t) - softmax(z_t))``, ``dh_t = dz_t @ W``, ``dW = sum_t dz_t^T h_t``,
    ``db = sum_t dz_t``; exactly 0 from ignored positions.

    Reference: ``token_logprobs(F.linear(hidden, weight, bias), labels)``, i.e. with ``m = labels != ignore_index``:
    ``log_softmax(F.linear(h, W, b).double(), -1).gather(-1, labels.clamp_min(0)[..., None])[..., 0] * m``

    The logits of at most ``chunk_size`` target rows exist at any time (forward and backward):
    peak extra memory is one chunk's logits, not ``N x V``. Backward recomputes them (one more
    matmul than the materialized path). The logits are computed in ``hidden``'s dtype, like the
    model's own LM head; the log-softmax accumulates in float32.

    Args:
        hidden: ``(..., H)`` final hidden states (after the model's final norm), e.g. ``(B, T, H)``;
            float32, bfloat16 or float16.
        weight: ``(V, H)`` the LM head's weight (the input embedding's, for tied embeddings),
            ``hidden``'s dtype and device.
        labels: ``(...)`` = ``hidden.shape[:-1]``: token ids in ``[0, V)`` or ``ignore_index``,
            aligned with ``hidden`` (``labels[t]`` is predicted from ``hidden[t]``; see
            :func:`rift_losses.shift_labels`).
        bias: ``(V,)`` the LM head's bias, or None.
        ignore_index: label value of positions that are not targets.
        chunk_size: target rows per chunk; None: :func:`default_chunk_size` (about 2^23 logits
            on CPU, 2^28 on accelerators).
        impl: the log-prob backend per chunk, as in :func:`rift_losses.token_logprobs`.

    Returns:
        ``(...)`` float32, the shape of ``labels``, differentiable with respect to ``hidden``,
        ``weight`` and ``bias``.

    Raises:
        TypeError: non-tensor inputs, non-floating ``hidden``, ``weight`` of another dtype or
            device, non-integer labels.
        ValueError: shape mismatches (shapes printed); on CPU a label outside ``[0, V)`` other
            than ``ignore_index`` (its index printed); a ``chunk_size`` that is not a positive
            int; ``impl`` not in :data:`rift_losses.IMPLS`.
    """
    hidden, weight, bias, safe_labels, mask, opts = _prepare(
        hidden, weight, labels, bias, ignore_index, chunk_size, impl
    )
    return _FusedTokenLogprobs.apply(hidden, weight, bias, safe_labels, mask, opts)


def fused_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    rewards: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    loss: str = "rift",
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch=None,
    level: str = "token",
    return_stats: bool = False,
    chunk_size: int | None = None,
    impl: str = "auto",
):
    """A reward-weighted loss (eq. 5 ``"rift"`` or eq. 1 ``"naive"``) straight from hidden states and the LM head.

    Formula, per target token t of a sample with reward r: ``-r * log p_t`` if r > 0,
    ``-r * p_t`` if r < 0 (``loss="rift"``, eq. 5), with ``log p_t`` from
    :func:`fused_token_logprobs`; reduced as :func:`rift_losses.logprob_loss` reduces.

    Reference: ``rift_loss(F.linear(hidden, weight, bias), labels, rewards, ...)`` (same options),
    i.e. ``logprob_loss(fused_token_logprobs(hidden, weight, labels), labels != ignore_index, rewards, ...)``

    Shapes: ``hidden (B, T, H)`` (or ``(N, H)`` with ``level="token"``), ``weight (V, H)``,
    ``labels (B, T)``, ``rewards (B,)`` or ``(B, T)``.

    Args:
        hidden, weight, labels, bias, ignore_index, chunk_size, impl: as in
            :func:`fused_token_logprobs`.
        rewards: ``(B,)`` one per sample (2-D labels only), or one per token, the shape of
            ``labels`` (``level="token"`` only). Any real dtype; used as float32.
        loss: a name from :data:`rift_losses.LOSSES`.
        reduction, num_items_in_batch, level, return_stats: as in :func:`rift_losses.logprob_loss`.

    Returns:
        The loss (0-dim unless ``reduction="none"``), or ``(loss, LossStats)``.

    Raises:
        TypeError, ValueError: as :func:`fused_token_logprobs` and :func:`rift_losses.logprob_loss`,
            before any matmul.
    """
    _check_options(loss, reduction, level, num_items_in_batch)
    hidden, weight, bias, safe_labels, mask, opts = _prepare(
        hidden, weight, labels, bias, ignore_index, chunk_size, impl
    )
    _check_level_shape(level, labels, "labels")
    shapes = f"hidden {tuple(hidden.shape)}, labels {tuple(labels.shape)}"
    rewards = _checks.check_rewards(rewards, labels, per_token_ok=(level == "token"), shapes=shapes)
    logp = _FusedTokenLogprobs.apply(hidden, weight, bias, safe_labels, mask, opts)
    return _loss_from_logprobs(
        LOSSES[loss],
        logp,
        mask,
        rewards,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        level=level,
        return_stats=return_stats,
    )
