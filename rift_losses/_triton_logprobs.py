"""Triton kernels of :func:`rift_losses.token_logprobs` (CUDA; imported lazily, only when chosen).

Notation: N rows (target positions), V vocabulary; one program per row.

- Forward: online log-sum-exp over the row in float32 blocks of ``BLOCK_V`` logits (one read of
  the logits); stores ``lse`` (N floats, kept for backward) and ``log p_y = z_y - lse``.
  Ignored rows (label ``ignore_index``) read nothing and store 0.
- Backward: ``dz = g * (onehot(y) - exp(z - lse))`` block by block, cast to the output dtype
  (one read and one write of the logits). Ignored rows read nothing and store zeros. The output
  may be the logits buffer itself (in-place gradient): each block is read before it is written.

Rows are addressed with a row stride and a vocabulary stride, so sliced logits such as
``logits[:, :-1]`` are read where they lie (one launch per viewable block of rows). Offsets are
64-bit: ``N * V`` may exceed 2**31 (16384 x 151936 does).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._layout import row_blocks

_BLOCK_V = 4096
_NUM_WARPS = 8


@triton.jit
def _forward_kernel(
    z_ptr,
    stride_row,
    stride_v,
    target_ptr,
    logp_ptr,
    lse_ptr,
    V,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    y = tl.load(target_ptr + row)  # -1: ignored row
    valid = y >= 0
    z_row = z_ptr + row * stride_row
    v_end = tl.where(valid, V, 0)
    m = float("-inf")
    s = 0.0
    for start in range(0, v_end, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        z = tl.load(z_row + cols.to(tl.int64) * stride_v, mask=cols < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(z, 0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row of -inf so far: no NaN
        s = s * tl.exp(m - m_safe) + tl.sum(tl.exp(z - m_safe), 0)
        m = m_new
    lse = tl.where(m == float("-inf"), 0.0, m) + tl.log(tl.where(valid, s, 1.0))
    y_safe = tl.where(valid, y, 0)
    z_y = tl.load(z_row + y_safe * stride_v, mask=valid, other=0.0).to(tl.float32)
    tl.store(lse_ptr + row, tl.where(valid, lse, 0.0))
    tl.store(logp_ptr + row, tl.where(valid, z_y - lse, 0.0))


@triton.jit
def _backward_kernel(
    z_ptr,
    stride_row,
    stride_v,
    out_ptr,
    out_stride_row,
    out_stride_v,
    target_ptr,
    lse_ptr,
    g_ptr,
    V,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    y = tl.load(target_ptr + row)
    valid = y >= 0
    g = tl.where(valid, tl.load(g_ptr + row), 0.0)
    lse = tl.load(lse_ptr + row)
    z_row = z_ptr + row * stride_row
    out_row = out_ptr + row * out_stride_row
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        in_row = cols < V
        cols64 = cols.to(tl.int64)
        z = tl.load(z_row + cols64 * stride_v, mask=in_row & valid, other=float("-inf")).to(tl.float32)
        p = tl.exp(z - lse)
        dz = tl.where(cols == y, g - g * p, -g * p)
        dz = tl.where(valid, dz, 0.0)
        tl.store(out_row + cols64 * out_stride_v, dz.to(out_ptr.dtype.element_ty), mask=in_row)


def _launch_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else _NullContext()


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _config(V: int, block_v: int | None, num_warps: int | None) -> tuple[int, int]:
    """Launch configuration: ``BLOCK_V`` and warps (defaults: _BLOCK_V capped at V's power of 2, _NUM_WARPS)."""
    block_v = min(_BLOCK_V, triton.next_power_of_2(V)) if block_v is None else block_v
    return block_v, _NUM_WARPS if num_warps is None else num_warps


def forward(logits: torch.Tensor, safe_labels: torch.Tensor, mask: torch.Tensor, *, block_v=None, num_warps=None):
    """Returns ``(logp (N,), lse (N,))`` float32; ``logp`` is 0 at ignored rows.

    ``block_v``/``num_warps`` override the launch configuration (benchmarks/gpu_check.py tunes them).
    """
    V = logits.shape[-1]
    block_v, num_warps = _config(V, block_v, num_warps)
    target = torch.where(mask, safe_labels, -1).reshape(-1).contiguous()
    n = target.shape[0]
    logp = torch.empty(n, dtype=torch.float32, device=logits.device)
    lse = torch.empty(n, dtype=torch.float32, device=logits.device)
    offset = 0
    with _launch_guard(logits):
        for block in row_blocks(logits):
            rows = block.shape[0]
            if rows:
                _forward_kernel[(rows,)](
                    block,
                    block.stride(0),
                    block.stride(1),
                    target[offset:],
                    logp[offset:],
                    lse[offset:],
                    V,
                    BLOCK_V=block_v,
                    num_warps=num_warps,
                )
            offset += rows
    return logp, lse


def backward(logits, safe_labels, mask, lse, g, out, *, block_v=None, num_warps=None) -> None:
    """Write ``g * (onehot(y) - softmax(logits))`` into ``out`` (logits' shape; may be logits)."""
    V = logits.shape[-1]
    block_v, num_warps = _config(V, block_v, num_warps)
    target = torch.where(mask, safe_labels, -1).reshape(-1).contiguous()
    g = g.to(torch.float32).contiguous()
    lse = lse.contiguous()
    inplace = out is logits
    out_rows = None if inplace else out.view(-1, V)
    offset = 0
    with _launch_guard(logits):
        for block in row_blocks(logits):
            rows = block.shape[0]
            out_block = block if inplace else out_rows[offset : offset + rows]
            if rows:
                _backward_kernel[(rows,)](
                    block,
                    block.stride(0),
                    block.stride(1),
                    out_block,
                    out_block.stride(0),
                    out_block.stride(1),
                    target[offset:],
                    lse[offset:],
                    g[offset:],
                    V,
                    BLOCK_V=block_v,
                    num_warps=num_warps,
                )
            offset += rows
