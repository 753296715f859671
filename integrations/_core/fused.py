"""The fused LM head in a host's training step: the model's head computes target log-probs, not logits.

Every host calls the model the same way (``model(**inputs)`` through its DDP / DeepSpeed /
PEFT wrappers) and hands ``outputs.logits`` to the RIFT loss. :func:`fused_lm_head` swaps, for
that one call, the ``forward`` of the module ``get_output_embeddings()`` returns: given the
final hidden states ``(B, T, H)`` it returns :func:`rift_losses.fused_token_logprobs` of the
step's next-token targets ``(B, T)`` (float32, 0 at non-targets) instead of ``(B, T, V)``
logits. The loss (:func:`fused_logprobs`) recognises that tensor and uses the log-probs.

Why inside the head's forward: under DeepSpeed ZeRO-3 the head's weight is gathered only
while its module runs (and again for its backward); DDP and gradient accumulation see an
ordinary module. Tied embeddings are the same parameter and get both gradients.

Refused with the reason (the host then keeps the logits path, :func:`head_refusal`): a head
that is not a plain ``torch.nn.Linear`` (LoRA or ``modules_to_save`` on the head, a quantized
head), and models that transform the logits after the head (``final_logit_softcapping``,
``logit_scale``, ``logits_scaling``). A model that changes the head's output anyway is caught
after the call (the tensor is neither the head's output nor an exact copy of it) and fails
loudly: never a wrong loss.

Only training steps with gradients use it: evaluation and prediction keep the logits, which
``compute_metrics`` / ``preprocess_logits_for_metrics`` / token accuracy need.
"""

from __future__ import annotations

import contextlib

import torch

from rift_losses import fused_token_logprobs, shift_labels

from .switch import ENV_FUSED_HEAD, env_enabled

#: Config attributes of models that transform the logits after the head (the fused head refuses them).
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")
IGNORE_INDEX = -100
__all__ = ["ENV_FUSED_HEAD", "FusedStep", "env_enabled", "fused_lm_head", "fused_logprobs", "head_refusal"]


def _unwrap(model):
    """The model under DDP / DeepSpeed (``.module``) wrappers."""
    seen = 0
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module) and seen < 8:
        model, seen = model.module, seen + 1
    return model


def output_head(model):
    """``get_output_embeddings()`` of the (unwrapped; PEFT delegates it) model, or None."""
    base = _unwrap(model)
    get = getattr(base, "get_output_embeddings", None)
    return get() if callable(get) else None


def head_refusal(model) -> str | None:
    """Why the fused head cannot replace this model's head (a sentence), or None when it can."""
    head = output_head(model)
    if head is None:
        return "the model has no output embeddings (get_output_embeddings() returned None)"
    if type(head) is not torch.nn.Linear:
        return (
            f"its LM head is a {type(head).__module__}.{type(head).__name__}, not a plain torch.nn.Linear "
            "(LoRA or modules_to_save on the head, or a quantized head)"
        )
    if not head.weight.is_floating_point():
        return f"its LM head's weight has dtype {head.weight.dtype}, not a floating-point dtype"
    config = getattr(_unwrap(model), "config", None)
    configs = [config]
    if config is not None and hasattr(config, "get_text_config"):
        configs.append(config.get_text_config())
    for cfg in configs:
        for attr in LOGIT_TRANSFORMS:
            value = getattr(cfg, attr, None)
            if value is not None and value != 1:
                return f"the model transforms its logits after the head ({attr}={value})"
    return None


class FusedStep:
    """One step's fused head: the targets the head scores, and the log-probs it returned."""

    def __init__(self, targets: torch.Tensor):
        #: ``(B, T)`` next-token targets (the host's labels shifted), -100 at non-targets
        self.targets = targets
        #: ``(B, T)`` float32 log-probs the head returned (None until the model ran)
        self.logprobs: torch.Tensor | None = None
        #: their version counter when the head returned them (an in-place change bumps it)
        self.version = 0

    def returned(self, logits) -> bool:
        """Whether ``logits`` holds exactly the head's log-probs, unchanged.

        Either the tensor itself, a detached alias of it (DeepSpeed ZeRO-3 hands a module's outputs
        on through an autograd function that returns ``outputs.detach()``), or an exact copy (DDP
        with ``find_unused_parameters``, TRL's and the Trainer's default, passes them through its
        ``_DDPSink``, which clones them): same shape, dtype and values, the head's own output never
        written in place since. A model that transforms the head's output (soft-capping, scaling)
        changes the values.
        """
        lp = self.logprobs
        if lp is None or not isinstance(logits, torch.Tensor):
            return False
        if logits is lp:
            return True
        if logits.shape != lp.shape or logits.dtype != lp.dtype or lp._version != self.version:
            return False
        if (
            logits.untyped_storage().data_ptr() == lp.untyped_storage().data_ptr()
            and logits.storage_offset() == lp.storage_offset()
            and logits.stride() == lp.stride()
        ):
            return logits._version == self.version
        return bool(torch.equal(logits.detach(), lp.detach()))  # (B, T) float32: a copy, not a transform


@contextlib.contextmanager
def fused_lm_head(model, labels: torch.Tensor, *, chunk_size: int | None = None):
    """During the block, the model's LM head returns target log-probs ``(B, T)`` for ``labels``.

    Args:
        model: the model as the host calls it (DDP / DeepSpeed / PEFT wrapped or not); its head
            must pass :func:`head_refusal`.
        labels: ``(B, T)`` the host's unshifted labels, aligned with the positions the head sees
            (after ``logits_to_keep``), -100 at non-target positions.
        chunk_size: target rows per chunk (:func:`rift_losses.fused_token_logprobs`).

    Yields:
        :class:`FusedStep`; after the model call, ``step.logprobs`` is the head's output.
    """
    head = output_head(model)
    step = FusedStep(shift_labels(labels, ignore_index=IGNORE_INDEX))
    previous = head.__dict__.get("forward")

    def forward(hidden):
        if step.logprobs is not None:
            raise RuntimeError("the fused LM head was called twice in one training step; set RIFT_FUSED_HEAD=0")
        targets = step.targets.to(hidden.device)
        if tuple(hidden.shape[:-1]) != tuple(targets.shape):
            raise RuntimeError(
                f"the fused LM head got hidden states {tuple(hidden.shape)} for labels {tuple(targets.shape)}: "
                "the model projects other positions than the labels cover; set RIFT_FUSED_HEAD=0"
            )
        weight, bias = head.weight, head.bias
        device_type = hidden.device.type
        if torch.is_autocast_enabled(device_type):  # the dtype autocast would give F.linear
            dtype = torch.get_autocast_dtype(device_type)
            hidden, weight = hidden.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        elif hidden.dtype != weight.dtype:
            hidden = hidden.to(weight.dtype)
        with torch.autocast(device_type, enabled=False):
            step.logprobs = fused_token_logprobs(hidden, weight, targets, bias=bias, chunk_size=chunk_size)
        step.version = step.logprobs._version
        return step.logprobs

    head.forward = forward
    try:
        yield step
    finally:
        if previous is None:
            del head.forward
        else:
            head.forward = previous


def fused_logprobs(step: FusedStep | None, logits) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(logprobs, mask)`` ``(B, T-1)`` for :func:`batch_loss` when ``logits`` is the fused head's output.

    None when no fused step is active. Raises ``RuntimeError`` when one is active but the model
    returned something else than the head's log-probs (it transformed them: a wrong loss otherwise).
    """
    if step is None:
        return None
    if not step.returned(logits):
        raise RuntimeError(
            "the fused LM head's log-probs did not come back unchanged as the model's logits (the model "
            "transforms its head's output, or did not call it); set RIFT_FUSED_HEAD=0 "
            "(rift_fused_head: false) for this model"
        )
    return logits[:, :-1], step.targets[:, :-1] != IGNORE_INDEX  # logits: the alias that carries ZeRO-3's hooks
