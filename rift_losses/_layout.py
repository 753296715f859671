"""Row layout of the logits, shared by both backends of :func:`rift_losses.token_logprobs`.

A leaf module: it imports torch only, never a backend, so ``_torch_logprobs`` and
``_triton_logprobs`` both import it and neither imports the other.
"""

from __future__ import annotations

from typing import Protocol

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 accumulation for float32/bfloat16/float16 logits; float64 stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def row_blocks(x: torch.Tensor) -> list[torch.Tensor]:
    """2-D ``(rows, V)`` views that cover ``x``'s rows in row-major order, without copying.

    A contiguous (or row-contiguous) tensor is one block; a sliced one such as
    ``logits[:, :-1]`` is split along its leading dimensions until each part is viewable.
    """
    try:
        return [x.view(-1, x.shape[-1])]
    except RuntimeError:
        return [block for part in x.unbind(0) for block in row_blocks(part)]


class Backend(Protocol):
    """The interface both backend modules implement (``_torch_logprobs``, ``_triton_logprobs``).

    ``logits`` is ``(..., V)``; ``safe_labels`` and ``mask`` have ``logits.shape[:-1]``
    (``safe_labels`` is 0 where ``mask`` is False); N is the number of rows.
    """

    def forward(
        self, logits: torch.Tensor, safe_labels: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logp (N,), lse (N,))`` in the compute dtype, both 0 at rows outside ``mask``."""

    def backward(
        self,
        logits: torch.Tensor,
        safe_labels: torch.Tensor,
        mask: torch.Tensor,
        lse: torch.Tensor,
        g: torch.Tensor,
        out: torch.Tensor,
    ) -> None:
        """Write ``g * (onehot(y) - softmax(logits))`` into ``out`` (logits' shape and dtype; may
        be ``logits`` itself), zeros at rows outside ``mask``."""
