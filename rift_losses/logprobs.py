"""The one primitive every loss here is built on: the log-probability of each target token.

Notation for shapes: B batch, T tokens, V vocabulary, N = B*T flattened rows.

Two implementations with the same contract (results equal within the core's error budget):

- ``"triton"``: two Triton kernels (``rift_losses/_triton_logprobs.py``), one program per row;
  chosen automatically for CUDA logits when Triton is importable.
- ``"torch"``: PyTorch ops a row or a chunk of rows at a time, everywhere else (CPU, CUDA
  without Triton, other devices): ``rift_losses/_torch_logprobs.py``.

Both backend modules have the same interface (:class:`rift_losses._layout.Backend`:
``forward`` and ``backward``) and share the row-layout helpers of ``rift_losses/_layout.py``;
this module holds the API and the autograd function that dispatches to them.

Both keep one float per row between forward and backward (its log-sum-exp) and write the
logits gradient ``g * (onehot(y) - softmax(logits))`` in the logits' dtype: three passes over
the logits in all (read in forward, read + write in backward), or in place over the logits
buffer with ``inplace_grad=True``.
"""

from __future__ import annotations

import functools
import os
import types
from dataclasses import dataclass

import torch

from . import _checks, _torch_logprobs
from ._layout import Backend

#: Implementations of :func:`token_logprobs`, by name (the single source of truth for the
#: ``impl`` option and its error message).
IMPLS = ("auto", "torch", "triton")


@dataclass(frozen=True)
class _Options:
    impl: str  # "torch" or "triton", resolved
    inplace_grad: bool


@functools.cache
def _triton_backend() -> types.ModuleType | None:
    """The Triton module, or None when Triton cannot be imported (imported once, lazily; a
    broken Triton install makes ``impl="auto"`` fall back to PyTorch rather than fail)."""
    try:
        from . import _triton_logprobs
    except Exception:
        return None
    return _triton_logprobs


def _backend(impl: str) -> Backend:
    """The module implementing a resolved ``impl`` (both have ``forward`` and ``backward``)."""
    return _triton_backend() if impl == "triton" else _torch_logprobs


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _resolve_impl(impl: str, logits: torch.Tensor) -> str:
    _checks.one_of("impl", impl, IMPLS)
    kernel_dtype = logits.dtype in (torch.float32, torch.bfloat16, torch.float16)
    if impl == "auto":
        return "triton" if logits.is_cuda and kernel_dtype and _triton_backend() is not None else "torch"
    if impl == "triton":
        if _triton_backend() is None:
            raise ValueError("impl must be 'auto' or 'torch' when the triton package is not importable, got 'triton'")
        if not (logits.is_cuda or _triton_interpreted()):
            raise ValueError(
                f"logits must be on a CUDA device for impl='triton', got device {logits.device} "
                "(TRITON_INTERPRET=1 runs the kernels in Triton's CPU interpreter, for tests)"
            )
        if not kernel_dtype:
            raise ValueError(f"logits must be float32, bfloat16 or float16 for impl='triton', got dtype {logits.dtype}")
    return impl


class _TokenLogprobs(torch.autograd.Function):
    """log p(y_t) = logits[t, y_t] - logsumexp(logits[t, :]), float32 accumulation.

    Forward keeps only the per-row log-sum-exp (N floats); backward writes
    ``dlogits = g * (onehot(y) - softmax(logits))`` in the logits' dtype, into a new tensor or,
    with ``inplace_grad``, over the logits buffer. Both run in the backend of ``opts.impl``.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, safe_labels: torch.Tensor, mask: torch.Tensor, opts: _Options):
        logp, lse = _backend(opts.impl).forward(logits, safe_labels, mask)
        ctx.save_for_backward(logits, safe_labels, mask, lse)
        ctx.opts = opts
        return logp.view(safe_labels.shape).to(torch.float32)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logp: torch.Tensor):
        logits, safe_labels, mask, lse = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        g = (grad_logp.to(lse.dtype) * mask).reshape(-1)
        if ctx.opts.inplace_grad:
            out = logits
        else:
            out = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        _backend(ctx.opts.impl).backward(logits, safe_labels, mask, lse, g, out)
        if ctx.opts.inplace_grad and ctx.opts.impl == "triton":
            # The kernel's writes bypass autograd's version counter: bump it, so a later reader
            # of the old logits fails loudly instead of reading the gradient.
            torch.autograd.graph.increment_version(logits)
        return out, None, None, None


def token_logprobs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    impl: str = "auto",
    inplace_grad: bool = False,
) -> torch.Tensor:
    """Log-probability of each target token, in float32, 0 at ignored positions.

    Formula: ``log p_t = logits[t, y_t] - logsumexp_v logits[t, v]`` for every position t whose
    label ``y_t != ignore_index``; 0 elsewhere. Gradient:
    ``dlogits_t = g_t * (onehot(y_t) - softmax(logits_t))``, 0 at ignored positions.

    Reference:
    ``log_softmax(logits.double(), -1).gather(-1, labels.clamp_min(0)[..., None])[..., 0] * (labels != ignore_index)``

    Labels are aligned with logits (``labels[t]`` is the token predicted by ``logits[t]``): no
    hidden shift. For Hugging Face causal-LM labels, call :func:`shift_labels` first.

    Memory and time: the log-sum-exp of each row is accumulated in float32 (float64 for
    float64 logits) without a float32 copy of the logits; the forward keeps one float per row;
    the backward's only large allocation is the logits gradient, in the logits' dtype (none
    with ``inplace_grad``). Sliced logits such as ``logits[:, :-1]`` are read where they lie.
    No host synchronisation on accelerators (on CPU, rows whose label is ``ignore_index`` are
    skipped outright).

    Args:
        logits: ``(..., V)`` float32, bfloat16 or float16; any leading shape, e.g. ``(B, T, V)``.
        labels: ``(...)`` integer token ids in ``[0, V)`` or ``ignore_index``; ``logits.shape[:-1]``.
        ignore_index: label value of positions that are not targets.
        impl: ``"auto"`` (Triton kernels for CUDA logits when Triton is importable, else the
            chunked PyTorch path), ``"torch"`` or ``"triton"``.
        inplace_grad: write the logits gradient over the logits buffer instead of a new tensor,
            saving one logits-sized allocation. Only for callers that do not use ``logits``
            after this call, in forward or backward (no other loss, metric or saved tensor on
            the same logits): after backward their values are gone. Gradients are unchanged.
            Autograd's version counter turns a later backward that needed the old values into
            an error rather than a wrong result.

    Returns:
        ``(...)`` float32, the shape of ``labels``, differentiable with respect to ``logits``.

    Raises:
        TypeError: non-tensor inputs, non-floating logits, non-integer labels, non-bool
            ``inplace_grad``.
        ValueError: shape mismatch (all shapes printed); on CPU, a label outside ``[0, V)``
            other than ``ignore_index`` (its index printed); ``impl`` not in ``IMPLS``;
            ``impl="triton"`` without Triton, without CUDA logits, or with float64 logits.
    """
    logits = _checks.check_logits(logits)
    labels = _checks.check_labels(labels, logits, ignore_index)
    if not isinstance(inplace_grad, bool):
        raise TypeError(f"inplace_grad must be a bool, got {inplace_grad!r}")
    opts = _Options(impl=_resolve_impl(impl, logits), inplace_grad=inplace_grad)
    mask = labels != ignore_index
    safe_labels = torch.where(mask, labels, 0).long()
    return _TokenLogprobs.apply(logits, safe_labels, mask, opts)


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
