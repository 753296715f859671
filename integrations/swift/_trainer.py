"""Trainer: the batch's rewards from the model inputs to the loss, and the responses of a step.

``Seq2SeqTrainer.prepare_logits_to_keep`` trims per-token rewards exactly like the labels;
``Seq2SeqTrainer.compute_loss`` moves the batch's rewards out of the model inputs onto the
trainer, where :class:`.loss.RiftLoss` reads them, and runs training steps through the fused LM
head (``integrations/_core/fused.py``; its log-probs reach the loss as ``outputs.logits``);
``Seq2SeqTrainer._get_num_items_in_batch``
counts the responses of the optimizer step for ``RIFT_LEVEL=sequence`` (the adapter core's
:func:`sequence_proxies`, counted and gathered by the Trainer's own rule).
"""

from __future__ import annotations

from .._core.loss import sequence_proxies
from .._core.patching import wrap
from ._state import HOST, KEY


def _fused_step_wanted(trainer, model, inputs, return_outputs=False, *args, **kwargs) -> bool:
    """Whether this ``compute_loss`` call runs the fused LM head: a training step with gradients whose
    outputs are not returned, and no ``loss_scale`` (MS-Swift then computes a cross-entropy from the logits
    before the loss), with ``RIFT_FUSED_HEAD=1`` and a model whose head passed the checks."""
    import torch

    loss = getattr(trainer, "compute_loss_func", None)
    return bool(
        getattr(loss, "fused_head", False)
        and model.training
        and torch.is_grad_enabled()
        and not kwargs.get("return_outputs", return_outputs)
        and inputs.get("loss_scale") is None
        and "labels" in inputs
    )


def install_trainer_patches() -> None:
    """Wrap the three ``Seq2SeqTrainer`` methods (idempotent)."""
    import torch
    import torch.nn.functional as F
    from swift.trainers.seq2seq_trainer import Seq2SeqTrainer

    from .._core.fused import fused_lm_head
    from .loss import FUSED_ATTR, NUM_SEQUENCES_ATTR, REWARDS_ATTR

    def make_prepare_logits_to_keep(original):
        def prepare_logits_to_keep(self, inputs):
            rewards = inputs.get(KEY)
            if not isinstance(rewards, torch.Tensor) or rewards.dim() != 2:
                return original(self, inputs)  # per-sample rewards keep their batch dimension
            labels = inputs["labels"]
            original(self, inputs)
            keep = inputs.get("logits_to_keep")
            if isinstance(keep, torch.Tensor) and keep.dtype == torch.bool:  # one row, positions kept by mask
                rewards = F.pad(rewards[:, (labels != -100)[0]], (1, 0), value=0.0)
            elif isinstance(keep, int) and keep > 0:  # a suffix of every row
                rewards = rewards[:, -keep:]
            if rewards.shape != inputs["labels"].shape:
                raise RuntimeError(
                    f"per-token rewards must follow the labels through logits_to_keep, got rewards "
                    f"{tuple(rewards.shape)} for labels {tuple(inputs['labels'].shape)}"
                )
            inputs[KEY] = rewards

        return prepare_logits_to_keep

    def make_compute_loss(original):
        def compute_loss(self, model, inputs, *args, **kwargs):
            rewards = inputs.pop(KEY, None) if isinstance(inputs, dict) else None
            if rewards is None:
                return original(self, model, inputs, *args, **kwargs)
            if not getattr(self.compute_loss_func, "is_rift_loss", False):
                raise RuntimeError(
                    f"the batch carries rewards but the loss ({self.compute_loss_func!r}) does not use them"
                )
            setattr(self, REWARDS_ATTR, rewards)
            try:
                if not _fused_step_wanted(self, model, inputs, *args, **kwargs):
                    return original(self, model, inputs, *args, **kwargs)
                with fused_lm_head(model, inputs["labels"]) as step:
                    setattr(self, FUSED_ATTR, step)
                    return original(self, model, inputs, *args, **kwargs)
            finally:
                setattr(self, REWARDS_ATTR, None)
                setattr(self, FUSED_ATTR, None)

        return compute_loss

    def make_num_items(original):
        def _get_num_items_in_batch(self, batch_samples, device):
            count = original(self, batch_samples, device)
            loss = getattr(self, "compute_loss_func", None)
            if count is not None and getattr(loss, "is_rift_loss", False) and loss.level == "sequence":
                setattr(self, NUM_SEQUENCES_ATTR, original(self, sequence_proxies(batch_samples), device))
            return count

        return _get_num_items_in_batch

    wrap(Seq2SeqTrainer, "prepare_logits_to_keep", make_prepare_logits_to_keep, host=HOST)
    wrap(Seq2SeqTrainer, "compute_loss", make_compute_loss, host=HOST)
    if hasattr(Seq2SeqTrainer, "_get_num_items_in_batch"):
        wrap(Seq2SeqTrainer, "_get_num_items_in_batch", make_num_items, host=HOST)
