"""rift-losses: the loss functions of RIFT (Reward-Informed Fine-Tuning, arXiv 2601.09253).

Pure PyTorch functions over logits, labels and rewards. The names below are loaded on first use
(PEP 562), so ``import rift_losses.data`` (the ``rift-losses`` command: ``--version``, ``--help``)
does not import torch; using any of them imports torch and nothing else heavy (no transformers,
MS-Swift or LLaMA-Factory).

- :func:`token_logprobs`: float32 log p of each target token; Triton on CUDA, PyTorch elsewhere;
  never upcasts the whole logits; only the logits gradient as extra memory (or none, in place).
- :func:`logprob_loss`: the loss from per-token target log-probs (eq. 1 or eq. 5), for log-probs that
  come without logits (a fused LM head); every loss below is ``token_logprobs`` + this.
- :func:`naive_loss` (eq. 1), :func:`rift_loss` (eq. 5), :func:`normalized_reward_loss` (eq. 6-8).
- :func:`normalize_rewards` (eq. 6-8), :func:`constant_rewards` (the paper's +1.0 / -0.2).
- :func:`fused_token_logprobs`, :func:`fused_loss`: the same from the final hidden states and the LM
  head, chunk by chunk: the ``(N, V)`` logits are never built whole.
- :func:`shift_labels`: align Hugging Face causal-LM labels with their logits.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .fused_head import fused_loss, fused_token_logprobs
    from .logprobs import IMPLS, shift_labels, token_logprobs
    from .losses import (
        LEVELS,
        LOSSES,
        REDUCTIONS,
        LossStats,
        logprob_loss,
        naive_loss,
        normalized_reward_loss,
        rift_loss,
    )
    from .rewards import NORMALIZATIONS, constant_rewards, normalize_rewards

#: Where each public name lives (loaded on first use).
_MODULES = {
    "fused_loss": "fused_head",
    "fused_token_logprobs": "fused_head",
    "IMPLS": "logprobs",
    "shift_labels": "logprobs",
    "token_logprobs": "logprobs",
    "LEVELS": "losses",
    "LOSSES": "losses",
    "REDUCTIONS": "losses",
    "LossStats": "losses",
    "logprob_loss": "losses",
    "naive_loss": "losses",
    "normalized_reward_loss": "losses",
    "rift_loss": "losses",
    "NORMALIZATIONS": "rewards",
    "constant_rewards": "rewards",
    "normalize_rewards": "rewards",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        if not name.startswith("__"):  # a submodule, as after an eager import: rift_losses.losses
            try:
                return importlib.import_module(f".{name}", __name__)
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{name}":
                    raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES))


__version__ = "0.1.0"

__all__ = [
    "IMPLS",
    "LEVELS",
    "LOSSES",
    "NORMALIZATIONS",
    "REDUCTIONS",
    "LossStats",
    "constant_rewards",
    "fused_loss",
    "fused_token_logprobs",
    "logprob_loss",
    "naive_loss",
    "normalize_rewards",
    "normalized_reward_loss",
    "rift_loss",
    "shift_labels",
    "token_logprobs",
]
