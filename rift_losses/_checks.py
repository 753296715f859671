"""Input validation shared by the core functions.

Every message reads ``"<param> must <constraint>, got <value>"``. Checks on tensor *metadata*
(shape, dtype) always run: they cost nothing. Checks on tensor *values* (label range, finite
rewards) need to read the data; on CPU that is cheap, on an accelerator it would force a
device-to-host synchronisation in the training hot path, so there they are skipped and the
adapters validate rewards once, when the dataset is loaded (see ``values_checkable``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def one_of(name: str, value: object, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a ValueError listing them."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        listing = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {listing}, got {value!r}")
    return value


def values_checkable(t: torch.Tensor) -> bool:
    """Whether reading ``t``'s values is free of a device synchronisation (CPU tensors)."""
    return t.device.type == "cpu"


def first_index(mask: torch.Tensor) -> tuple[int, ...]:
    """The index of the first True element of ``mask`` (row-major), as a tuple."""
    flat = int(mask.reshape(-1).nonzero()[0, 0])
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), mask.shape))


def fmt_index(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def require_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_logits(logits: object) -> torch.Tensor:
    logits = require_tensor("logits", logits)
    if not logits.is_floating_point():
        raise TypeError(
            f"logits must be a floating-point tensor (float32, bfloat16 or float16), got dtype {logits.dtype}"
        )
    if logits.dim() < 2:
        raise ValueError(f"logits must have shape (..., V) with at least 2 dimensions, got shape {tuple(logits.shape)}")
    if logits.shape[-1] == 0:
        raise ValueError(f"logits must have a non-empty vocabulary dimension V, got shape {tuple(logits.shape)}")
    return logits


def check_labels(labels: object, logits: torch.Tensor, ignore_index: int) -> torch.Tensor:
    labels = require_tensor("labels", labels)
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be an integer tensor of token ids, got dtype {labels.dtype}")
    check_same_device("labels", labels, "logits", logits)
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            "labels must have the shape of logits without its last (vocabulary) dimension, "
            f"got logits {tuple(logits.shape)}, labels {tuple(labels.shape)}"
        )
    if values_checkable(labels) and labels.numel():
        vocab = logits.shape[-1]
        bad = (labels != ignore_index) & ((labels < 0) | (labels >= vocab))
        if bool(bad.any()):
            index = first_index(bad)
            raise ValueError(
                f"labels must be in [0, V={vocab}) or equal ignore_index={ignore_index}, "
                f"got {int(labels[index])} at index {fmt_index(index)}"
            )
    return labels


def check_finite(name: str, values: torch.Tensor) -> None:
    """Raise naming the first non-finite element of ``values`` (CPU tensors only)."""
    if values_checkable(values) and values.numel():
        bad = ~torch.isfinite(values)
        if bool(bad.any()):
            index = first_index(bad)
            raise ValueError(f"{name} must be finite, got {float(values[index])} at index {fmt_index(index)}")


def check_real(name: str, values: object) -> torch.Tensor:
    values = require_tensor(name, values)
    if values.is_complex() or values.dtype == torch.bool:
        raise TypeError(f"{name} must be a real-valued tensor, got dtype {values.dtype}")
    return values


def check_rewards(
    rewards: object, targets: torch.Tensor, *, per_token_ok: bool = True, shapes: str, targets_name: str = "labels"
) -> torch.Tensor:
    """Validate ``rewards`` against the targets; return them as float32 on the targets' device.

    ``targets`` is the labels or the target mask: ``rewards`` is per sample, shape
    ``targets.shape[:1]`` (only for 2-D targets ``(B, T)``), or per token, the shape of
    ``targets``. ``shapes`` names the other inputs' shapes for the message
    (e.g. ``"logits (2, 3, 5), labels (2, 3)"``), ``targets_name`` the input whose shape a
    per-token reward takes (``"labels"`` or ``"logprobs"``).
    """
    rewards = check_real("rewards", rewards)
    per_sample = targets.dim() == 2 and tuple(rewards.shape) == tuple(targets.shape[:1])
    per_token = tuple(rewards.shape) == tuple(targets.shape)
    if not (per_sample or (per_token and per_token_ok)):
        if targets.dim() != 2:
            constraint = f"have the shape of {targets_name} (one reward per token)"
        elif per_token_ok:
            constraint = "have shape (B,) per sample or (B, T) per token"
        else:
            constraint = "have shape (B,) per sample"
        raise ValueError(f"rewards must {constraint}, got {shapes}, rewards {tuple(rewards.shape)}")
    check_finite("rewards", rewards)
    try:  # rewards may live elsewhere (a CPU list of rewards for CUDA logits): moved to the targets' device
        return rewards.to(device=targets.device, dtype=torch.float32)
    except (RuntimeError, NotImplementedError) as exc:  # e.g. a meta tensor, which holds no values to move
        raise ValueError(
            f"rewards must be on the device of {targets_name} ({targets.device}) or movable there, got rewards on "
            f"{rewards.device} ({str(exc).splitlines()[0]})"
        ) from None


def check_logprobs(logprobs: object, mask: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the inputs of :func:`rift_losses.logprob_loss`: float log-probs and a bool mask of one shape."""
    logprobs = require_tensor("logprobs", logprobs)
    mask = require_tensor("mask", mask)
    if not logprobs.is_floating_point():
        raise TypeError(
            f"logprobs must be a floating-point tensor of per-token log-probabilities, got dtype {logprobs.dtype}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True at target tokens), got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(logprobs.shape):
        raise ValueError(
            f"mask must have the shape of logprobs, got logprobs {tuple(logprobs.shape)}, mask {tuple(mask.shape)}"
        )
    if logprobs.dim() == 0:
        raise ValueError("logprobs must have at least 1 dimension ((N,) or (B, T)), got a 0-dim tensor")
    check_same_device("mask", mask, "logprobs", logprobs)
    if values_checkable(logprobs) and logprobs.numel():
        # log p <= 0; the slack allows the rounding of a log-softmax computed in logprobs' dtype
        slack = 64 * torch.finfo(logprobs.dtype).eps
        bad = mask & (logprobs.detach() > slack)
        if bool(bad.any()):
            index = first_index(bad)
            raise ValueError(
                f"logprobs must be <= 0 at the target tokens (log-probabilities, not probabilities or logits), got "
                f"{float(logprobs[index]):.6g} at index {fmt_index(index)}"
            )
    return logprobs, mask


def check_same_device(name: str, value: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """Raise naming both tensors and devices when ``value`` is not on ``ref``'s device."""
    if value.device != ref.device:
        raise ValueError(f"{name} must be on the device of {ref_name} ({ref.device}), got {name} on {value.device}")


def check_num_items(num_items_in_batch: object) -> None:
    if num_items_in_batch is None:
        return
    if isinstance(num_items_in_batch, torch.Tensor):
        if num_items_in_batch.numel() != 1 or num_items_in_batch.is_complex() or num_items_in_batch.dtype == torch.bool:
            raise ValueError(
                "num_items_in_batch must be a non-negative number or a one-element tensor, "
                f"got a tensor of shape {tuple(num_items_in_batch.shape)} and dtype {num_items_in_batch.dtype}"
            )
        if values_checkable(num_items_in_batch) and not float(num_items_in_batch) >= 0:
            raise ValueError(f"num_items_in_batch must be >= 0, got {float(num_items_in_batch)}")
        return
    if isinstance(num_items_in_batch, bool) or not isinstance(num_items_in_batch, (int, float)):
        raise TypeError(
            f"num_items_in_batch must be a number, a one-element tensor or None, got {num_items_in_batch!r}"
        )
    if not num_items_in_batch >= 0 or num_items_in_batch != num_items_in_batch or num_items_in_batch == float("inf"):
        raise ValueError(f"num_items_in_batch must be a finite number >= 0, got {num_items_in_batch!r}")
