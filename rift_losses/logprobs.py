"""The one primitive every loss here is built on: the log-probability of each target token.

Notation for shapes: B batch, T tokens, V vocabulary, N = B*T flattened rows.

Two implementations with the same contract (results equal within the core's error budget):

- ``"triton"``: two Triton kernels (``rift_losses/_triton_logprobs.py``), one program per row;
  chosen automatically for CUDA logits when Triton is importable.
- ``"torch"``: PyTorch ops a row or a chunk of rows at a time, everywhere else (CPU, CUDA
  without Triton, other devices).

Both keep one float per row between forward and backward (its log-sum-exp) and write the
logits gradient ``g * (onehot(y) - softmax(logits))`` in the logits' dtype: three passes over
the logits in all (read in forward, read + write in backward), or in place over the logits
buffer with ``inplace_grad=True``.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from dataclasses import dataclass

import torch

from . import _checks

#: Implementations of :func:`token_logprobs`, by name (the single source of truth for the
#: ``impl`` option and its error message).
IMPLS = ("auto", "torch", "triton")

# The PyTorch path has two strategies, with the same arithmetic:
#
# - rows (CPU): every op covers one row, a few short rows, or a piece of a long row, small
#   enough that ATen runs it in the calling thread (an elementwise op on at most
#   at::internal::GRAIN_SIZE = 32768 elements; a (log_)softmax over one row, or over at most
#   32 KiB of rows), and up to torch.get_num_threads() Python threads share the rows (ops
#   release the GIL).
#   No OpenMP parallel region at all: thousands of small parallel regions stall whenever a
#   core is busy with another process (measured 10x slower than this on a loaded 2-core
#   machine), while each row's float32 copy stays in L1/L2 cache. Should ATen's thresholds
#   change, the ops would run in parallel regions inside the threads: slower, still correct.
# - chunks (other devices: CUDA without Triton, ...): ops over chunks of _CHUNK_ELEMENTS logits
#   (whole rows) in scratch buffers allocated once per call; large chunks amortise launches.
#
# Either way the logits are never upcast whole, and scratch buffers are reused (no page fault
# per chunk on CPU).
_ROWS_DEVICES = ("cpu",)
_SERIAL_ELEMENTS = 32768  # at::internal::GRAIN_SIZE: elementwise ops on at most this many
_SERIAL_SOFTMAX_BYTES = 32768  # ATen's CPU (log_)softmax: rows of up to 32 KiB per task in all
_GROUPS_PER_TASK = 16  # at most this many row groups per task handed to a thread,
_TASK_ELEMENTS = 1 << 18  # and at most about this many logits (1 MiB of float32 output rows)
_THREAD_MIN_ELEMENTS = 1 << 21  # below this many logits, one thread (starting more costs more)
_MAX_THREADS = 8  # beyond this the GIL-held part of each op (a few us) would bound the speed-up
_CHUNK_ELEMENTS = {"cpu": 1 << 17}
_CHUNK_ELEMENTS_DEFAULT = 1 << 24


@dataclass(frozen=True)
class _Options:
    impl: str  # "torch" or "triton", resolved
    inplace_grad: bool


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 accumulation for float32/bfloat16/float16 logits; float64 stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _row_blocks(x: torch.Tensor) -> list[torch.Tensor]:
    """2-D ``(rows, V)`` views that cover ``x``'s rows in row-major order, without copying.

    A contiguous (or row-contiguous) tensor is one block; a sliced one such as
    ``logits[:, :-1]`` is split along its leading dimensions until each part is viewable.
    """
    try:
        return [x.view(-1, x.shape[-1])]
    except RuntimeError:
        return [block for part in x.unbind(0) for block in _row_blocks(part)]


@functools.lru_cache(maxsize=None)
def _triton_backend():
    """The Triton module, or None when Triton cannot be imported (imported once, lazily; a
    broken Triton install makes ``impl="auto"`` fall back to PyTorch rather than fail)."""
    try:
        from . import _triton_logprobs
    except Exception:
        return None
    return _triton_logprobs


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


# --------------------------------------------------------------------------------------------
# The PyTorch implementation: rows on CPU, chunks elsewhere.
# --------------------------------------------------------------------------------------------


class _Scratch:
    """Chunk-sized buffers reused by every chunk of one call: two in the compute dtype and,
    for gathered (non-contiguous) row sets in another dtype, one staging buffer in the logits'
    dtype (allocated on first use)."""

    def __init__(self, rows: int, logits: torch.Tensor):
        self.rows = rows
        self.dtype = logits.dtype
        self.compute = _compute_dtype(logits.dtype)
        shape = (rows, logits.shape[-1])
        self.a = torch.empty(shape, dtype=self.compute, device=logits.device)
        self.b = torch.empty(shape, dtype=self.compute, device=logits.device)
        self._stage = None

    def stage(self, n: int) -> torch.Tensor:
        if self._stage is None:
            self._stage = torch.empty((self.rows, self.a.shape[1]), dtype=self.dtype, device=self.a.device)
        return self._stage[:n]

    def load(self, block: torch.Tensor, sel) -> torch.Tensor:
        """Rows ``sel`` of ``block`` in the compute dtype, to be read only (never written)."""
        if isinstance(sel, slice):
            rows = block[sel]
            if rows.dtype == self.compute:
                return rows  # read in place: the caller's logits are never written here
            buf = self.a[: rows.shape[0]]
            buf.copy_(rows)
            return buf
        n = sel.shape[0]
        if block.dtype == self.compute:
            return torch.index_select(block, 0, sel, out=self.a[:n])
        stage = torch.index_select(block, 0, sel, out=self.stage(n))
        buf = self.a[:n]
        buf.copy_(stage)
        return buf

    def store(self, out_block: torch.Tensor, sel, values: torch.Tensor) -> None:
        """Write ``values`` (compute dtype) into rows ``sel`` of ``out_block`` (its dtype)."""
        if isinstance(sel, slice):
            out_block[sel].copy_(values)
        elif out_block.dtype == values.dtype:
            out_block.index_copy_(0, sel, values)
        else:
            stage = self.stage(values.shape[0])
            stage.copy_(values)
            out_block.index_copy_(0, sel, stage)


def _selections(block_mask: torch.Tensor, step: int, skip_ignored: bool):
    """Row selectors covering one block's rows, ``step`` rows at a time.

    Without ``skip_ignored`` every row is covered by slices (no host read: accelerators).
    With it (CPU tensors, where reading the mask is free) only target rows are: a run of
    consecutive target rows is a slice, any other set of rows a 1-D index tensor.
    """
    n = block_mask.shape[0]
    if not skip_ignored:
        for start in range(0, n, step):
            yield slice(start, min(start + step, n))
        return
    idx = block_mask.nonzero().squeeze(1)
    pos = idx.tolist()
    for s in range(0, len(pos), step):
        e = min(s + step, len(pos))
        if pos[e - 1] - pos[s] == e - 1 - s:
            yield slice(pos[s], pos[e - 1] + 1)
        else:
            yield idx[s:e]


# ---- rows strategy (CPU) --------------------------------------------------------------------


def _rowwise(logits: torch.Tensor) -> bool:
    return logits.device.type in _ROWS_DEVICES


def _columns(t: torch.Tensor):
    """``t`` in column pieces of at most ``_SERIAL_ELEMENTS`` (one piece below that)."""
    return t.split(_SERIAL_ELEMENTS, -1) if t.shape[-1] > _SERIAL_ELEMENTS else (t,)


def _group_rows(vocab: int, compute: torch.dtype) -> int:
    """Rows per op: as many whole rows as ATen's CPU (log_)softmax runs in one task."""
    itemsize = torch.finfo(compute).bits // 8
    return max(1, _SERIAL_SOFTMAX_BYTES // (itemsize * vocab))


def _parallel(tasks: list, make_worker, elements: int) -> None:
    """Run every task on up to ``torch.get_num_threads()`` threads (this one included; one
    thread below ``_THREAD_MIN_ELEMENTS`` logits). ``make_worker()`` is called once per thread
    and returns ``run(task)``."""
    n_threads = min(torch.get_num_threads(), _MAX_THREADS, len(tasks))
    if elements < _THREAD_MIN_ELEMENTS:
        n_threads = 1
    counter = itertools.count()  # next() on it is atomic under the GIL
    errors = []

    def loop():
        try:
            with torch.no_grad(), torch.autocast("cpu", enabled=False):
                run = make_worker()
                while (i := next(counter)) < len(tasks):
                    run(tasks[i])
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(n_threads - 1)]
    for t in threads:
        t.start()
    loop()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _row_tasks(logits: torch.Tensor, flat_mask: torch.Tensor, group: int, out=None):
    """Tasks of a few groups of ``group`` consecutive rows of one block (``_groups_per_task``).

    A task is ``(offset, start, stop, groups, out_groups, states)``: flat row offset of its
    block, its rows ``[start, stop)`` in the block, the row groups (views) and those of ``out``,
    and per group 0 (no target row), 1 (some) or 2 (all).
    """
    is_target = flat_mask.tolist()
    inplace = out is logits
    out_rows = None if out is None or inplace else out.view(-1, out.shape[-1])
    span = group * _groups_per_task(group, logits.shape[-1])
    tasks = []
    offset = 0
    for block in _row_blocks(logits):
        rows = block.shape[0]
        groups = block.split(group)
        if out is None:
            out_groups = None
        else:
            out_groups = groups if inplace else out_rows[offset : offset + rows].split(group)
        for start in range(0, rows, span):
            stop = min(start + span, rows)
            states = []
            for g0 in range(start, stop, group):
                flags = is_target[offset + g0 : offset + min(g0 + group, rows)]
                states.append(2 if all(flags) else (1 if any(flags) else 0))
            first = start // group
            tasks.append((offset, start, stop, groups[first : first + len(states)],
                          None if out_groups is None else out_groups[first : first + len(states)], states))
        offset += rows
    return tasks


def _groups_per_task(group: int, vocab: int) -> int:
    return max(1, min(_GROUPS_PER_TASK, _TASK_ELEMENTS // (group * vocab)))


def _rowwise_forward(logits: torch.Tensor, flat_y: torch.Tensor, flat_mask: torch.Tensor, compute: torch.dtype):
    vocab = logits.shape[-1]
    group = _group_rows(vocab, compute)
    logp = torch.zeros(flat_y.shape[0], dtype=compute)
    tasks = [t for t in _row_tasks(logits, flat_mask, group) if any(t[-1])]
    cast = logits.dtype != compute

    def make_worker():
        row_buf = torch.empty(group, vocab, dtype=compute)
        buf_pieces = _columns(row_buf)
        out = torch.empty(group * _groups_per_task(group, vocab), vocab, dtype=compute)
        slots = out.split(group)

        def run(task):
            offset, start, stop, groups, _, states = task
            for k, state in enumerate(states):
                if state:
                    src, dst = groups[k], slots[k]
                    n = src.shape[0]
                    if n != group:  # the last group of a block
                        dst = dst[:n]
                    if cast:
                        buf = row_buf if n == group else row_buf[:n]
                        for d, c in zip(buf_pieces if n == group else _columns(buf), _columns(src)):
                            d.copy_(c)
                        src = buf
                    torch.log_softmax(src, -1, out=dst)  # one task: serial whatever V
            # rows without a target gather stale values here; the caller masks them with where
            lp = out[: stop - start].gather(1, flat_y[offset + start : offset + stop, None]).squeeze(1)
            logp[offset + start : offset + stop] = lp

        return run

    _parallel(tasks, make_worker, flat_mask.shape[0] * vocab)
    return logp


def _rowwise_backward(logits, flat_mask, g, out, compute) -> None:
    """``out`` rows = ``-g * softmax(row)`` for target rows, 0 for the others (never read)."""
    vocab = logits.shape[-1]
    group = _group_rows(vocab, compute)
    neg_g = (-g)[:, None]
    neg_g_list = (-g).tolist()
    not_target = ~flat_mask[:, None]
    tasks = _row_tasks(logits, flat_mask, group, out)
    cast = logits.dtype != compute
    same_out = out.dtype == compute

    def make_worker():
        row_buf = torch.empty(group, vocab, dtype=compute)
        buf_pieces = _columns(row_buf)
        p = torch.empty(group, vocab, dtype=compute)
        p_pieces = _columns(p)

        def run(task):
            offset, start, _, groups, out_groups, states = task
            f = offset + start  # flat index of the group's first row
            for src, dst, state in zip(groups, out_groups, states):
                n = src.shape[0]
                if not state:
                    for d in _columns(dst):
                        d.zero_()
                    f += n
                    continue
                full = n == group
                if cast:
                    buf = row_buf if full else row_buf[:n]
                    for d, c in zip(buf_pieces if full else _columns(buf), _columns(src)):
                        d.copy_(c)
                    src = buf
                q = torch.softmax(src, -1, out=p if full else p[:n])  # one task: serial whatever V
                q_pieces = p_pieces if full else _columns(q)
                scale = neg_g_list[f] if n == 1 else neg_g[f : f + n]
                if state == 2 and same_out:
                    for d, c in zip(_columns(dst), q_pieces):
                        torch.mul(c, scale, out=d)
                else:
                    for c in q_pieces:
                        c.mul_(scale)
                    if state == 1:
                        q.masked_fill_(not_target[f : f + n], 0.0)
                    for d, c in zip(_columns(dst), q_pieces):
                        d.copy_(c)
                f += n

        return run

    _parallel(tasks, make_worker, flat_mask.shape[0] * vocab)


# ---- chunks strategy -------------------------------------------------------------------------


def _take(x: torch.Tensor, sel) -> torch.Tensor:
    return x[sel] if isinstance(sel, slice) else x.index_select(0, sel)


def _chunk_rows(logits: torch.Tensor) -> int:
    elements = _CHUNK_ELEMENTS.get(logits.device.type, _CHUNK_ELEMENTS_DEFAULT)
    rows = max(1, elements // logits.shape[-1])
    return min(rows, max(1, logits.numel() // logits.shape[-1]))


def _torch_forward(logits: torch.Tensor, safe_labels: torch.Tensor, mask: torch.Tensor):
    """``log_softmax`` of each row in float32, a row or a chunk at a time; returns
    ``(logp (N,), lse (N,))``, both 0 at ignored rows."""
    flat_y = safe_labels.reshape(-1)
    flat_mask = mask.reshape(-1)
    compute = _compute_dtype(logits.dtype)
    if _rowwise(logits):
        logp = _rowwise_forward(logits, flat_y, flat_mask, compute)
    else:
        logp = _chunked_forward(logits, flat_y, flat_mask)
    # lse = z_y - log p_y, from the target logit itself (N scattered reads, no copy)
    z_y = logits.gather(-1, safe_labels[..., None]).reshape(-1).to(compute)
    lse = torch.where(flat_mask, z_y - logp, 0.0)
    return torch.where(flat_mask, logp, 0.0), lse  # where, not *: an ignored row may hold inf/NaN


def _chunked_forward(logits, flat_y, flat_mask):
    step = _chunk_rows(logits)
    scratch = _Scratch(step, logits)
    skip = _checks.values_checkable(flat_mask)
    logp = torch.zeros(flat_y.shape[0], dtype=scratch.compute, device=logits.device)
    offset = 0
    for block in _row_blocks(logits):
        rows = block.shape[0]
        ys = flat_y[offset : offset + rows]
        for sel in _selections(flat_mask[offset : offset + rows], step, skip):
            src = scratch.load(block, sel)
            out = torch.log_softmax(src, -1, out=scratch.b[: src.shape[0]])
            lp = out.gather(1, _take(ys, sel)[:, None]).squeeze(1)
            if isinstance(sel, slice):
                logp[offset + sel.start : offset + sel.stop] = lp
            else:
                logp.index_copy_(0, sel + offset, lp)
        offset += rows
    return logp


def _torch_backward(logits, safe_labels, mask, lse, g, out) -> None:
    """Write ``g * (onehot(y) - softmax(logits))`` into ``out`` (logits' shape and dtype).

    Per row or chunk: ``softmax`` in float32 (``exp(z - lse)``, recomputed by PyTorch's fused
    kernel from the row in cache), times ``-g``, cast into ``out``; then, per block of rows, the
    target column is overwritten with ``g * (1 - p_y) = -g * expm1(z_y - lse)`` (no cancellation
    when p_y is close to 1), by ``index_put_`` (``scatter_`` would upcast a whole bfloat16
    ``out`` to float32 on CPU). Ignored rows are zero-filled without being read (CPU) or
    masked (elsewhere). ``out`` may be ``logits`` itself (in-place gradient): every row is
    read before it is written, and the target logits are read first.
    """
    flat_y = safe_labels.reshape(-1)
    flat_mask = mask.reshape(-1)
    z_y = logits.gather(-1, safe_labels[..., None]).reshape(-1).to(lse.dtype)
    target_grad = torch.where(flat_mask, g * -torch.expm1(z_y - lse), 0.0).to(out.dtype)
    if _rowwise(logits):
        _rowwise_backward(logits, flat_mask, g, out, lse.dtype)
    else:
        _chunked_backward(logits, flat_mask, g, out)
    # index_put_, not scatter_: on CPU scatter_ upcasts a bfloat16 tensor whole to float32.
    out_rows = None if out is logits else out.view(-1, out.shape[-1])
    offset = 0
    for block in _row_blocks(logits):
        rows = block.shape[0]
        out_block = block if out is logits else out_rows[offset : offset + rows]
        row_ids = torch.arange(rows, device=out.device)
        out_block.index_put_((row_ids, flat_y[offset : offset + rows]), target_grad[offset : offset + rows])
        offset += rows


def _chunked_backward(logits, flat_mask, g, out) -> None:
    neg_g = (-g)[:, None]
    step = _chunk_rows(logits)
    scratch = _Scratch(step, logits)
    skip = _checks.values_checkable(flat_mask)
    inplace = out is logits
    out_rows = None if inplace else out.view(-1, out.shape[-1])
    offset = 0
    for block in _row_blocks(logits):
        rows = block.shape[0]
        out_block = block if inplace else out_rows[offset : offset + rows]
        block_mask = flat_mask[offset : offset + rows]
        block_neg_g = neg_g[offset : offset + rows]
        for sel in _selections(block_mask, step, skip):
            src = scratch.load(block, sel)
            p = torch.softmax(src, -1, out=scratch.b[: src.shape[0]])
            p.mul_(_take(block_neg_g, sel))
            if not skip:  # ignored rows were computed too: zero them (0 * inf would be NaN)
                p.masked_fill_(~block_mask[sel][:, None], 0.0)
            scratch.store(out_block, sel, p)
        if skip:
            ignored = (~block_mask).nonzero().squeeze(1)
            if ignored.numel():
                out_block.index_fill_(0, ignored, 0)
        offset += rows


# --------------------------------------------------------------------------------------------
# Autograd glue.
# --------------------------------------------------------------------------------------------


class _TokenLogprobs(torch.autograd.Function):
    """log p(y_t) = logits[t, y_t] - logsumexp(logits[t, :]), float32 accumulation.

    Forward keeps only the per-row log-sum-exp (N floats); backward writes
    ``dlogits = g * (onehot(y) - softmax(logits))`` in the logits' dtype, into a new tensor or,
    with ``inplace_grad``, over the logits buffer.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, safe_labels: torch.Tensor, mask: torch.Tensor, opts: _Options) -> torch.Tensor:
        if opts.impl == "triton":
            logp, lse = _triton_backend().forward(logits, safe_labels, mask)
        else:
            logp, lse = _torch_forward(logits, safe_labels, mask)
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
        if ctx.opts.impl == "triton":
            _triton_backend().backward(logits, safe_labels, mask, lse, g, out)
            if ctx.opts.inplace_grad:  # the kernel's writes bypass autograd's version counter: bump it, so
                torch.autograd.graph.increment_version(logits)  # a later reader of the old logits fails loudly
        else:
            _torch_backward(logits, safe_labels, mask, lse, g, out)
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

    Reference: ``torch.log_softmax(logits.double(), -1).gather(-1, labels.clamp_min(0)[..., None])[..., 0] * (labels != ignore_index)``

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
