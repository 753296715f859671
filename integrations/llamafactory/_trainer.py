"""RIFT in LLaMA-Factory's SFT trainer: float32 rewards to the loss, statistics to the logs.

Imported only after a config with ``use_rift_loss: true`` was parsed (LLaMA-Factory is fully
loaded then). :func:`install` points the SFT workflow and the tuner at three subclasses;
each acts only for a RIFT run and is LLaMA-Factory's own class otherwise:

- :class:`RiftSFTDataCollator`: takes ``rift_reward`` out of the samples before LLaMA-Factory's
  collator (which would cast a float column to bf16) and adds the batch's rewards as the int32
  bit pattern of float32 values (``rift_reward_bits``): no float cast (collator, DeepSpeed's
  input cast) can touch them on the way to the loss.
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
when there were none). Accumulation and summary: ``integrations/_common.py``, shared with MS-Swift.
"""

import torch
from llamafactory.data.collator import SFTDataCollatorWith4DAttentionMask
from llamafactory.train.callbacks import LogCallback
from llamafactory.train.sft.trainer import CustomSeq2SeqTrainer

import rift_losses
from rift_losses import shift_labels

from .._common import StatsAccumulator, stats_summary
from ._data import GROUP, REWARD
from ._patching import wrap_all

REWARD_BITS = "rift_reward_bits"
IGNORE_INDEX = -100  # LLaMA-Factory's and Hugging Face's label padding

#: loss name -> core function, from the core's registry.
LOSS_FUNCTIONS = {name: getattr(rift_losses, f"{name}_loss") for name in rift_losses.LOSSES}


class RiftSFTDataCollator(SFTDataCollatorWith4DAttentionMask):
    """LLaMA-Factory's SFT collator; with ``rift_reward`` in the samples, adds their rewards."""

    def __call__(self, features):
        if not features or REWARD not in features[0]:
            return super().__call__(features)
        rewards = []
        for feature in features:
            rewards.append(float(feature.pop(REWARD)))
            feature.pop(GROUP, None)
        batch = super().__call__(features)
        batch[REWARD_BITS] = torch.tensor(rewards, dtype=torch.float32).view(torch.int32)
        return batch


class RiftLoss:
    """``compute_loss_func`` of a RIFT run: the core loss on the batch's rewards.

    The trainer hands over each batch's rewards (:meth:`take`) right before the model call;
    the Trainer then calls this with the outputs, the unshifted labels and
    ``num_items_in_batch``. Training batches add their :class:`rift_losses.LossStats` to
    :attr:`stats` (detached, on device), scaled like the loss the Trainer logs.
    """

    def __init__(self, loss: str, *, level: str, items_scale: float = 1.0, inplace_grad: bool = True):
        self.function = LOSS_FUNCTIONS[loss]
        self.level = level
        #: ``rift_inplace_grad``: the logits gradient over the logits buffer in training steps
        self.inplace_grad = inplace_grad
        #: what the Trainer multiplies a loss over ``num_items_in_batch`` by before logging it
        self.items_scale = items_scale
        self.rewards = None
        self.training = False
        self.stats = StatsAccumulator()

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
        if logits is None:
            raise RuntimeError(
                "use_rift_loss needs the model's logits, got none: a fused linear + cross-entropy kernel skipped "
                "them (the Trainer calls the model without labels for a custom loss, which should keep them)"
            )
        labels = shift_labels(labels.to(logits.device), ignore_index=IGNORE_INDEX)
        # In place only in a training step that will run backward: the Trainer's training_step drops
        # the outputs after compute_loss; evaluation and prediction (which keep the logits) run none.
        inplace_grad = self.inplace_grad and self.training and torch.is_grad_enabled() and logits.requires_grad
        loss, stats = self.function(
            logits, labels, rewards.to(logits.device), ignore_index=IGNORE_INDEX, reduction="mean",
            num_items_in_batch=num_items_in_batch, level=self.level, return_stats=True, inplace_grad=inplace_grad,
        )
        if self.training:
            self.stats.add(stats, scale=self.items_scale if num_items_in_batch is not None else 1.0)
        return loss


class RiftSeq2SeqTrainer(CustomSeq2SeqTrainer):
    """LLaMA-Factory's SFT trainer; with ``use_rift_loss``, trains and logs the RIFT loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rift = None
        self._rift_last_step = None
        if getattr(self.finetuning_args, "use_rift_loss", False):
            if self.finetuning_args.rift_level == "sequence" and not hasattr(CustomSeq2SeqTrainer, "_get_num_items_in_batch"):
                raise ValueError(
                    "rift_level must be 'token' with this transformers version, got 'sequence': its Trainer has no "
                    "_get_num_items_in_batch to count sequences, and counting tokens instead would be wrong"
                )
            # The Trainer multiplies a custom loss by the number of processes when it averages
            # num_items_in_batch across devices (then the mean over ranks it logs is sum / N).
            scale = float(self.accelerator.num_processes) if self.args.average_tokens_across_devices else 1.0
            self._rift = RiftLoss(self.finetuning_args.rift_loss, level=self.finetuning_args.rift_level,
                                  items_scale=scale, inplace_grad=self.finetuning_args.rift_inplace_grad)
            self.compute_loss_func = self._rift

    def compute_loss(self, model, inputs, *args, **kwargs):
        if self._rift is not None:
            self._rift.take(inputs, training=model.training)
            if model.training and self._rift_last_step is None:
                self._rift_last_step = self.state.global_step
        return super().compute_loss(model, inputs, *args, **kwargs)

    def prediction_step(self, model, inputs, *args, **kwargs):
        if self._rift is not None:  # before generate() or the loss, which must not see them
            self._rift.take(inputs, training=False)
        return super().prediction_step(model, inputs, *args, **kwargs)

    def _get_num_items_in_batch(self, batch_samples, device):
        if self._rift is None or self._rift.level != "sequence":
            return super()._get_num_items_in_batch(batch_samples, device)
        # Sequence level: the denominator counts samples with a target token; let the Trainer
        # sum (and gather over ranks) it as it does tokens, from one "label" per such sample.
        proxies = []
        for batch in batch_samples:
            labels = batch.get("labels") if hasattr(batch, "get") else None  # a BatchEncoding, not a dict
            if labels is not None:
                has_target = (shift_labels(labels, ignore_index=IGNORE_INDEX) != IGNORE_INDEX).any(-1, keepdim=True)
                proxies.append({"labels": torch.where(has_target, 0, IGNORE_INDEX)})
        return super()._get_num_items_in_batch(proxies, device)

    def log(self, logs, *args, **kwargs):
        if self._rift is not None and "loss" in logs:
            logs.update(self._rift_window())
        return super().log(logs, *args, **kwargs)

    def _rift_window(self) -> dict:
        """The RIFT statistics of the optimizer steps since the last training log."""
        last, self._rift_last_step = self._rift_last_step, self.state.global_step
        steps = self.state.global_step - (last if last is not None else 0)
        totals = self._rift.stats.totals(device=self.args.device)
        self._rift.stats.reset()
        if steps <= 0:
            return {}
        world = self.accelerator.num_processes
        if world > 1:  # every rank logs at the same steps: the collective is safe
            totals = self.accelerator.reduce(totals, reduction="sum")
        summary = stats_summary(totals.tolist(), units=steps, world_size=world)
        return {f"rift/{key}": value for key, value in summary.items() if value is not None}


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
    wrap_all(_PATCHES)
