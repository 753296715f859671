"""The RIFT loss types in MS-Swift's ``swift.loss.loss_map`` (imported only once MS-Swift is).

MS-Swift's trainer instantiates ``loss_map[args.loss_type](args, trainer)`` and calls it per
micro-batch as ``loss(outputs, labels, num_items_in_batch=..., loss_scale=..., trainer=...)``
with the *unshifted* labels ``(B, T)`` and without the batch. The batch's rewards reach it
through the trainer (see :mod:`._trainer`): ``(B,)`` one per sample; ``(B, T)`` one per token,
aligned with the padded labels, when a sample of the batch has per-turn rewards (each assistant
turn's reward on its tokens, a row-level sample's reward on all of its own); or ``(1, T)`` one per
token for ``padding_free``/``packing``. Per-token rewards are shifted with the labels.

Per target token (paper eq. 5 / eq. 1), with r the reward of the token's response:
``-r * log p_t`` if r > 0, ``-r * p_t`` if r < 0 (``rift``); ``-r * log p_t`` (``rift_naive``).
The normalized variants train ``rift`` on rewards normalized over whole groups of the dataset
when it is loaded (eq. 6-8), not within a batch. The sum over target tokens is divided by
``num_items_in_batch`` (all target tokens of the optimizer step, over gradient-accumulation
micro-batches and data-parallel ranks), so accumulation and data parallelism equal one large
batch; with ``RIFT_LEVEL=sequence`` by the number of responses of the step instead.
"""

from __future__ import annotations

import os
import warnings

from swift.loss import BaseLoss, loss_map

from .._core.fused import fused_logprobs, head_refusal
from .._core.loss import batch_loss, inplace_grad_allowed, logged_loss_scale
from .._core.stats import STAT_NAMES, StatsWindow
from . import config

#: Trainer attribute holding the current batch's rewards while its loss is computed.
REWARDS_ATTR = "_rift_batch_rewards"
#: Trainer attribute holding the training step's fused LM head (``integrations/_core/fused.py``) while the model runs.
FUSED_ATTR = "_rift_fused_step"
#: Trainer attribute holding the number of responses of the optimizer step (sequence level).
NUM_SEQUENCES_ATTR = "_rift_num_sequences"
#: The key of the RIFT statistics in the trainer's ``custom_metrics`` (logged as ``rift_*``).
METRIC_KEY = "rift"


class RiftMetric:
    """RIFT's loss parts and token counts for MS-Swift's logs (``rift_pos_loss`` ...).

    Duck-types MS-Swift's ``Metric`` (``compute``/``reset``), kept in
    ``trainer.custom_metrics[mode]["rift"]`` so that ``Trainer.log`` adds ``rift_pos_loss``,
    ``rift_neg_loss``, ``rift_pos_tokens``, ``rift_neg_tokens`` and ``rift_neg_prob`` (``eval_``
    prefixed in evaluation): the adapter core's :class:`StatsWindow` (per optimizer step,
    averaged over the logging interval, like the logged ``loss``, so ``rift_pos_loss +
    rift_neg_loss == loss``; per evaluation batch in evaluation).
    """

    def __init__(self, trainer, mode: str):
        self.trainer = trainer
        self.window = StatsWindow(mode)

    def _global_step(self) -> int:
        state = getattr(self.trainer, "state", None)
        return int(getattr(state, "global_step", 0) or 0)

    def add(self, stats, *, scale: float) -> None:
        self.window.add(stats, scale=scale, global_step=self._global_step())

    def compute(self) -> dict:
        device = getattr(getattr(self.trainer, "args", None), "device", None)
        summary = self.window.summary(global_step=self._global_step(), device=device)
        return {key: summary.get(key) for key in STAT_NAMES}

    def reset(self) -> None:
        self.window.reset()


class RiftLoss(BaseLoss):
    """A RIFT loss for ``swift sft --loss_type <name>``; one subclass per :data:`config.LOSS_TYPES`."""

    loss_type = "rift"
    core_loss = "rift"
    normalization = None
    #: marks the RIFT losses for the trainer patches
    is_rift_loss = True

    def __init__(self, args, trainer):
        super().__init__(args, trainer)
        config.raise_registration_errors()
        self.knobs = config.read_knobs()
        config.check_args(args, self.knobs)
        self.level = self.knobs.level
        self._fused_head = None  # decided at the first step: MS-Swift builds the loss before it sets trainer.model
        self.metrics = {mode: RiftMetric(trainer, mode) for mode in ("train", "eval")}
        custom_metrics = getattr(trainer, "custom_metrics", None)
        if isinstance(custom_metrics, dict):
            for mode, metric in self.metrics.items():
                if mode in custom_metrics:
                    custom_metrics[mode][METRIC_KEY] = metric

    @property
    def fused_head(self) -> bool:
        """RIFT_FUSED_HEAD=1 and a model whose LM head can be fused (else a warning says why not, once)."""
        if self._fused_head is None:
            model = getattr(self.trainer, "model", None)
            if model is None:
                return False
            self._fused_head = self.knobs.fused_head and _head_fusable(model)
        return self._fused_head

    def __call__(self, outputs, labels, *, num_items_in_batch=None, loss_scale=None, trainer=None, **kwargs):
        """The loss of one micro-batch (paper eq. 5, or eq. 1 for ``rift_naive``): the adapter core's.

        Formula: ``sum_t head(log p_t, r_t) / num_items_in_batch`` over target tokens t, with
        ``head`` the core's (``-r log p`` for r > 0, ``-r p`` for r < 0).

        Reference: ``rift_losses.rift_loss(logits, shift_labels(labels), rewards, num_items_in_batch=n)``

        Args:
            outputs: the model output; ``outputs.logits`` is ``(B, T, V)``.
            labels: ``(B, T)`` MS-Swift's unshifted labels, -100 at non-target positions.
            num_items_in_batch: target tokens of the whole optimizer step (all micro-batches
                and ranks); None in evaluation (this batch's own count is used).
            loss_scale: MS-Swift's per-token weights, already shifted, ``(B * T,)``, or None.
            trainer: the MS-Swift trainer, which holds this batch's rewards: ``(B,)``, ``(B, T)`` or
                ``(1, T)`` (see the module doc), aligned with the unshifted ``labels``.

        Returns:
            The 0-dim loss. Its positive and negative parts go to the trainer's logs.

        Raises:
            RuntimeError: the batch carries no rewards (the adapter's data path is not installed).
        """
        trainer = trainer if trainer is not None else self.trainer
        rewards = getattr(trainer, REWARDS_ATTR, None)
        if rewards is None:
            raise RuntimeError(
                f"--loss_type {self.loss_type}: this batch carries no rewards. They are added when MS-Swift "
                "loads the dataset in `swift sft` with rift-losses' adapter installed (the rift_losses.pth "
                "hook, or --external_plugins $(python -m rift_losses.integrations.swift)); a custom trainer "
                f"or template that bypasses `Template.data_collator` does not carry them. {config.ENV_AUTOLOAD}="
                f"{os.environ.get(config.ENV_AUTOLOAD, '<unset>')}"
            )
        if loss_scale is not None and self.level == "sequence":
            raise ValueError(
                f"{config.ENV_LEVEL}=sequence cannot be combined with MS-Swift's per-token loss_scale "
                "(--loss_scale with non-binary weights): a response-level term has no per-token weight"
            )
        denominator = num_items_in_batch
        if self.level == "sequence" and num_items_in_batch is not None:
            denominator = getattr(trainer, NUM_SEQUENCES_ATTR, None)
            if denominator is None:
                raise RuntimeError(
                    f"{config.ENV_LEVEL}=sequence needs the number of responses of the optimizer step, which "
                    "rift-losses counts in Trainer._get_num_items_in_batch; this transformers version does not call it"
                )
        logits = outputs.logits
        mode = "train" if getattr(getattr(trainer, "model", None), "training", True) else "eval"
        fused = fused_logprobs(getattr(trainer, FUSED_ATTR, None), logits)
        if fused is not None:
            # The fused head's (B, T) log-probs came back as outputs.logits: MS-Swift's token accuracy
            # (argmax over the logits) has no logits to read in this step.
            outputs.logits = None
            logprobs, mask = fused  # (B, T-1): MS-Swift's (B * T,) weights cut to the same positions
            weights = loss_scale.reshape(labels.shape)[:, :-1] if loss_scale is not None else None
            source = {"logprobs": logprobs, "mask": mask, "token_weights": weights}
        else:
            # MS-Swift reads the logits after this call (token accuracy in compute_loss) before the
            # backward, never after it: in place is safe in a training step.
            inplace = inplace_grad_allowed(self.knobs.inplace_grad, training=mode == "train", logits=logits)
            source = {"logits": logits, "inplace_grad": inplace, "token_weights": loss_scale}
        # MS-Swift's per-token loss weights, already shifted: token terms scale linearly in r
        # for a fixed sign, so a weight s >= 0 on the term is a reward r * s.
        loss, stats = batch_loss(
            labels,
            rewards,
            loss=self.core_loss,
            level=self.level,
            num_items_in_batch=denominator,
            **source,
        )
        self.metrics[mode].add(stats, scale=self._logged_scale(trainer, num_items_in_batch))
        return loss

    @staticmethod
    def _logged_scale(trainer, num_items_in_batch) -> float:
        # MS-Swift's Seq2SeqTrainer.compute_loss restates the Trainer's rule with model_accepts_loss_kwargs alone.
        return logged_loss_scale(
            trainer, num_items_in_batch, counts_items=bool(getattr(trainer, "model_accepts_loss_kwargs", False))
        )


def _head_fusable(model) -> bool:
    """Whether the model's LM head can be fused; a warning with the reason when it cannot."""
    if model is None:
        return False
    reason = head_refusal(model)
    if reason is not None:
        warnings.warn(f"RIFT_FUSED_HEAD: the LM head is not fused, the logits are materialized: {reason}", stacklevel=3)
        return False
    return True


def loss_classes() -> dict[str, type]:
    """One :class:`RiftLoss` subclass per ``--loss_type`` name of :data:`config.LOSS_TYPES`."""
    classes = {}
    for name, (core_loss, normalization) in config.LOSS_TYPES.items():
        what = (
            f"RIFT on rewards normalized over whole groups ({normalization})"
            if normalization
            else f"the {core_loss!r} loss"
        )
        classes[name] = type(
            f"RiftLoss_{name}",
            (RiftLoss,),
            {
                "loss_type": name,
                "core_loss": core_loss,
                "normalization": normalization,
                "__doc__": f"``--loss_type {name}``: {what}.",
                "__module__": __name__,
            },
        )
    return classes


def register_loss_types() -> None:
    """Put the RIFT loss types in ``swift.loss.loss_map`` (idempotent)."""
    for name, cls in loss_classes().items():
        current = loss_map.get(name)
        if current is not None and getattr(current, "is_rift_loss", False):
            continue
        if current is not None and not getattr(current, "is_rift_placeholder", False):
            raise RuntimeError(
                f"swift.loss.loss_map already has a loss type {name!r} ({current!r}) that is not rift-losses'"
            )
        loss_map[name] = cls
