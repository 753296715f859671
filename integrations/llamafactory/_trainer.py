"""RIFT in LLaMA-Factory's SFT trainer: float32 rewards to the loss, statistics to the logs.

Imported only after a config with ``use_rift_loss: true`` was parsed (LLaMA-Factory is fully
loaded then). :func:`install` points the SFT workflow and the tuner at three subclasses;
each acts only for a RIFT run and is LLaMA-Factory's own class otherwise:

- :class:`RiftSFTDataCollator`: takes ``rift_reward`` out of the samples before LLaMA-Factory's
  collator (which would cast a float column to bf16) and adds the batch's rewards as the int32
  bit pattern of float32 values (``rift_reward_bits``): no float cast (collator, DeepSpeed's
  input cast) can touch them on the way to the loss. ``(B,)`` one per sample, or ``(B, T)`` one
  per token aligned with the padded labels when the samples carry per-turn rewards.
- :class:`RiftSeq2SeqTrainer`: pops the rewards before the model call and sets
  ``compute_loss_func`` (the Trainer then calls the model without labels and passes
  ``num_items_in_batch``, the target-token count of the whole optimizer step over all
  micro-batches and ranks): ``loss = sum / num_items_in_batch``, so gradient accumulation and
  data parallel equal one large batch. Accumulates :class:`rift_losses.LossStats` on device
  (no host sync per step) and adds them to each training log.
- :class:`RiftLogCallback`: LLaMA-Factory's ``trainer_log.jsonl`` writer plus the ``rift/*`` keys.

Logged per optimizer step (means over the logging window, summed over ranks):
``rift/pos_loss`` and ``rift/neg_loss`` (the parts of ``loss`` from positive and negative
rewards; they add up to ``loss``), ``rift/pos_tokens`` and ``rift/neg_tokens`` (target tokens
of samples with r > 0 and r < 0), ``rift/neg_prob`` (mean p of negative target tokens; absent
when there were none). The loss, its logged scale, the sequence counter and the statistics
window are the adapter core's (``integrations/_core``), shared with MS-Swift and TRL.
"""

import torch
from llamafactory.data.collator import SFTDataCollatorWith4DAttentionMask
from llamafactory.extras import logging
from llamafactory.train.callbacks import LogCallback
from llamafactory.train.sft.trainer import CustomSeq2SeqTrainer

from .._core.fused import env_enabled, fused_lm_head, fused_logprobs, head_refusal
from .._core.loss import batch_loss, inplace_grad_allowed, logged_loss_scale, sequence_proxies
from .._core.patching import wrap_all
from .._core.stats import StatsWindow
from ._run import GROUP, HOST, REWARD, TOKEN_REWARDS, TURNS

REWARD_BITS = "rift_reward_bits"
# A child of LLaMA-Factory's library logger, so it prints with LLaMA-Factory's handler and format.
logger = logging.get_logger("llamafactory.rift_losses")


class RiftSFTDataCollator(SFTDataCollatorWith4DAttentionMask):
    """LLaMA-Factory's SFT collator; with ``rift_reward`` in the samples, adds their rewards.

    ``(B,)`` one per sample; ``(B, T)`` one per token aligned with the padded ``labels`` (0 on
    padding, either padding side) when the samples carry ``rift_token_rewards`` (per-turn rewards).
    """

    def __call__(self, features):
        if not features or REWARD not in features[0]:
            return super().__call__(features)
        rewards, token_rewards, ids = [], [], []
        for feature in features:
            rewards.append(float(feature.pop(REWARD)))
            feature.pop(GROUP, None)
            feature.pop(TURNS, None)
            token_rewards.append(feature.pop(TOKEN_REWARDS, None))
            ids.append(list(feature["input_ids"]))
        batch = super().__call__(features)
        if all(t is None for t in token_rewards):
            values = torch.tensor(rewards, dtype=torch.float32)
        else:
            values = self._align(batch["input_ids"], ids, token_rewards, rewards)
        batch[REWARD_BITS] = values.view(torch.int32)
        return batch

    def _align(self, input_ids, ids, token_rewards, rewards) -> torch.Tensor:
        """``(B, T)`` float32: each sample's per-token rewards where its tokens landed in the padded batch."""
        out = torch.zeros(input_ids.shape, dtype=torch.float32)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for b, (sample, values, reward) in enumerate(zip(ids, token_rewards, rewards)):
            n = len(sample)
            start = input_ids.shape[1] - n if left else 0
            if start < 0 or input_ids[b, start : start + n].tolist() != sample:
                raise RuntimeError(
                    f"per-turn rewards must follow their tokens, got sample {b} of a batch at another place in the "
                    "padded input_ids than its padding side says; the rewards cannot be aligned with the labels"
                )
            if values is None:
                values = [reward] * n
            out[b, start : start + n] = torch.tensor(values, dtype=torch.float32)
        return out


class RiftLoss:
    """``compute_loss_func`` of a RIFT run: the adapter core's loss on the batch's rewards.

    The trainer hands over each batch's rewards (:meth:`take`) right before the model call;
    the Trainer then calls this with the outputs, the unshifted labels and
    ``num_items_in_batch``. Training batches add their :class:`rift_losses.LossStats` to
    :attr:`stats` (detached, on device), scaled like the loss the Trainer logs.
    """

    def __init__(self, loss: str, *, level: str, inplace_grad: bool = True, fused_head: bool = False, trainer=None):
        #: the trainer whose rule scales the logged loss (None: a loss used on its own, scale 1)
        self.trainer = trainer
        self.loss = loss
        self.level = level
        #: ``rift_inplace_grad``: the logits gradient over the logits buffer in training steps
        self.inplace_grad = inplace_grad
        #: ``rift_fused_head`` (and ``RIFT_FUSED_HEAD``), once the model's head passed the checks
        self.fused_head = fused_head
        #: the training step's fused head while the model runs (see ``integrations/_core/fused.py``)
        self.fused_step = None
        self.rewards = None
        self.training = False
        self.stats = StatsWindow("train")

    def take(self, inputs: dict, *, training: bool) -> None:
        bits = inputs.pop(REWARD_BITS, None)
        if bits is not None:
            self.rewards = bits.view(torch.float32)
            self.training = training

    def __call__(self, outputs, labels, num_items_in_batch=None):
        rewards, self.rewards = self.rewards, None
        if rewards is None:
            raise RuntimeError(
                "use_rift_loss got a batch without rewards: its samples did not come through rift-losses' data "
                "pipeline (rift_reward column); refusing to train it with another loss"
            )
        logits = outputs.get("logits") if hasattr(outputs, "get") else None
        fused = fused_logprobs(self.fused_step, logits)
        if fused is not None:  # the fused head's (B, T) log-probs: the logits were never built
            logprobs, mask = fused
            source = {"logprobs": logprobs, "mask": mask}
        elif logits is None:
            raise RuntimeError(
                "use_rift_loss needs the model's logits, got none: a fused linear + cross-entropy kernel skipped "
                "them (the Trainer calls the model without labels for a custom loss, which should keep them)"
            )
        else:
            # In place only in a training step that will run backward: the Trainer's training_step drops
            # the outputs after compute_loss; evaluation and prediction (which keep the logits) run none.
            inplace = inplace_grad_allowed(self.inplace_grad, training=self.training, logits=logits)
            source = {"logits": logits, "inplace_grad": inplace}
        loss, stats = batch_loss(
            labels, rewards, loss=self.loss, level=self.level, num_items_in_batch=num_items_in_batch, **source
        )
        if self.training and self.trainer is not None:  # the Trainer's own rule: this is its compute_loss_func
            scale = logged_loss_scale(self.trainer, num_items_in_batch)
            self.stats.add(stats, scale=scale, global_step=self.trainer.state.global_step)
        return loss


class RiftSeq2SeqTrainer(CustomSeq2SeqTrainer):
    """LLaMA-Factory's SFT trainer; with ``use_rift_loss``, trains and logs the RIFT loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rift = None
        if getattr(self.finetuning_args, "use_rift_loss", False):
            if self.finetuning_args.rift_level == "sequence" and not hasattr(
                CustomSeq2SeqTrainer, "_get_num_items_in_batch"
            ):
                raise ValueError(
                    "rift_level must be 'token' with this transformers version, got 'sequence': its Trainer has no "
                    "_get_num_items_in_batch to count sequences, and counting tokens instead would be wrong"
                )
            self._rift = RiftLoss(
                self.finetuning_args.rift_loss,
                level=self.finetuning_args.rift_level,
                inplace_grad=self.finetuning_args.rift_inplace_grad,
                fused_head=_fused_head_wanted(self.finetuning_args.rift_fused_head, self.model),
                trainer=self,
            )
            self.compute_loss_func = self._rift

    def compute_loss(self, model, inputs, *args, **kwargs):
        if self._rift is None:
            return super().compute_loss(model, inputs, *args, **kwargs)
        self._rift.take(inputs, training=model.training)
        return_outputs = kwargs.get("return_outputs", args[0] if args else False)
        # The fused head in training steps only (evaluation and prediction keep the logits, which
        # compute_metrics / preprocess_logits_for_metrics read), and only when the logits are not returned.
        if not (self._rift.fused_head and model.training and torch.is_grad_enabled() and not return_outputs):
            return super().compute_loss(model, inputs, *args, **kwargs)
        with fused_lm_head(model, inputs["labels"]) as step:
            self._rift.fused_step = step
            try:
                return super().compute_loss(model, inputs, *args, **kwargs)
            finally:
                self._rift.fused_step = None

    def prediction_step(self, model, inputs, *args, **kwargs):
        if self._rift is not None:  # before generate() or the loss, which must not see them
            self._rift.take(inputs, training=False)
        return super().prediction_step(model, inputs, *args, **kwargs)

    def _get_num_items_in_batch(self, batch_samples, device):
        if self._rift is None or self._rift.level != "sequence":
            return super()._get_num_items_in_batch(batch_samples, device)
        # Sequence level: the denominator counts samples with a target token; the Trainer sums
        # (and gathers over ranks) it as it does tokens, from one proxy target per such sample.
        return super()._get_num_items_in_batch(sequence_proxies(batch_samples), device)

    def log(self, logs, *args, **kwargs):
        if self._rift is not None and "loss" in logs:
            summary = self._rift.stats.summary(global_step=self.state.global_step, device=self.args.device)
            logs.update({f"rift/{key}": value for key, value in summary.items()})
        return super().log(logs, *args, **kwargs)


def _fused_head_wanted(option: bool, model) -> bool:
    """``rift_fused_head`` and ``RIFT_FUSED_HEAD`` both on, and the model's head fusable (else a warning why not)."""
    if not (option and env_enabled()):
        return False
    reason = head_refusal(model)
    if reason is not None:
        logger.warning_rank0(f"rift_fused_head: the LM head is not fused, the logits are materialized: {reason}")
        return False
    logger.info_rank0("rift_fused_head: training steps compute the loss from the LM head in chunks (no logits)")
    return True


class RiftLogCallback(LogCallback):
    """LLaMA-Factory's ``trainer_log.jsonl`` writer, plus the ``rift/*`` keys of the log."""

    def on_log(self, args, state, control, **kwargs):
        last = state.log_history[-1] if state.log_history else {}
        extra = {k: v for k, v in last.items() if k.startswith("rift/")}
        if not extra:
            return super().on_log(args, state, control, **kwargs)
        write = self._write_log  # bound at submit time, so the thread pool writes these keys too
        self._write_log = lambda output_dir, logs: write(output_dir, {**logs, **extra})
        try:
            return super().on_log(args, state, control, **kwargs)
        finally:
            del self._write_log


def _replace_with(subclass):
    def factory(original):
        if not issubclass(subclass, original):
            raise RuntimeError(f"rift-losses expected {original!r} to be a base of {subclass.__name__}")
        return subclass

    return factory


_PATCHES = (
    ("llamafactory.train.sft.workflow", "SFTDataCollatorWith4DAttentionMask", _replace_with(RiftSFTDataCollator)),
    ("llamafactory.train.sft.workflow", "CustomSeq2SeqTrainer", _replace_with(RiftSeq2SeqTrainer)),
    ("llamafactory.train.tuner", "LogCallback", _replace_with(RiftLogCallback)),
)


def install() -> None:
    """Point the SFT workflow and the tuner at the RIFT subclasses (idempotent)."""
    wrap_all(_PATCHES, host=HOST)
