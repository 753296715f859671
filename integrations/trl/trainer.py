"""``RiftSFTTrainer``: TRL's ``SFTTrainer`` training a RIFT loss on the dataset's rewards.

With a :class:`~.config.RiftSFTConfig` whose ``loss_type`` is a RIFT loss:

- before the model loads: refuses a ``compute_loss_func``; checks every row's reward (and
  normalizes them over whole groups of the dataset for the normalized losses), train and eval;
- keeps the reward column through TRL's ``remove_unused_columns``
  (:meth:`_set_signature_columns_if_needed`) and wraps the collator so each batch carries its
  rewards (one per token for ``padding_free``);
- :meth:`compute_loss`: the core's :func:`rift_losses.logprob_loss` over per-token log-probs
  that come without logits: in training steps from rift-losses' chunked head
  (``integrations/_core/fused.py``; ``rift_fused_head="rift"``, the default, measured leaner than
  TRL's head), else from TRL's fused head (``model(..., fused_lm_head=True)``; evaluation, or
  ``rift_fused_head="trl"``): the ``(B, T, V)`` logits are never built. ``rift_fused_head=False``
  or ``RIFT_FUSED_HEAD=0`` turns both off. When no fused head can be used, from the logits through
  :func:`rift_losses.token_logprobs`: (a) ``return_outputs=True`` (``compute_metrics`` or
  ``preprocess_logits_for_metrics`` need the logits anyway: one forward instead of TRL's two),
  (b) a model whose forward is no longer TRL's fused head (replaced after the trainer patched
  it). ``loss = sum / num_items_in_batch`` (times the number of processes with
  ``average_tokens_across_devices``), ``loss_is_scaled_for_ga = True``: gradient accumulation
  and data parallel equal one large batch;
- logs, through TRL's metrics, ``rift/pos_loss`` and ``rift/neg_loss`` (the parts of ``loss``
  from positive and negative rewards), ``rift/pos_tokens``, ``rift/neg_tokens`` and
  ``rift/neg_prob`` (mean p of negative-reward target tokens), per optimizer step; ``eval_loss``
  is the RIFT loss on the eval rewards.

With ``loss_type="nll"``/``"dft"`` (or a plain ``SFTConfig``) it is TRL's ``SFTTrainer``.
"""

from __future__ import annotations

import inspect
import warnings

import torch
from trl import SFTTrainer

from .._common import count_negative, ignored_reward_warning
from .._core.fused import env_enabled, fused_lm_head, fused_logprobs, head_refusal
from .._core.loss import batch_loss, inplace_grad_allowed, logged_loss_scale, sequence_proxies
from .._core.stats import StatsWindow
from ._data import REWARDS_KEY, TOKEN_REWARDS_COLUMN, RiftCollator, prepare_rewards, tokenize_conversations
from .config import RIFT_LOSS_TYPES, RiftSFTConfig


def _is_trl_fused_forward(model) -> bool:
    """Whether ``model.forward`` is the fused LM head that ``trl.trainer.utils.add_fused_lm_head`` installed."""
    func = getattr(getattr(model, "forward", None), "__func__", None)
    return getattr(getattr(func, "__code__", None), "co_name", None) == "_fused_forward"


def _base_model(model):
    """The model under a PEFT wrapper (TRL's fused head patches the base model's forward)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class RiftSFTTrainer(SFTTrainer):
    """TRL's ``SFTTrainer``; with a RIFT ``loss_type`` in a :class:`RiftSFTConfig`, trains RIFT.

    Same arguments as ``SFTTrainer``. The datasets must carry ``args.reward_column`` (one
    finite reward per row).
    """

    _tag_names = ["trl", "sft", "rift"]

    def __init__(self, *args, **kwargs):
        bound = inspect.signature(SFTTrainer.__init__).bind(self, *args, **kwargs)
        params = bound.arguments
        params.pop("self")
        config = params.get("args")
        self._rift_on = isinstance(config, RiftSFTConfig) and config.is_rift
        if not self._rift_on:
            if isinstance(config, RiftSFTConfig):
                _warn_ignored_rewards(params.get("train_dataset"), config)
            super().__init__(**params)
            return

        loss_name, method = config.rift_loss
        if params.get("compute_loss_func") is not None:
            raise ValueError(
                f"compute_loss_func must be None with loss_type={config.loss_type!r}, got "
                f"{params['compute_loss_func']!r}: it would replace the RIFT loss"
            )
        prepare = {
            "column": config.reward_column,
            "group_column": config.group_column,
            "method": method,
            "loss_type": config.loss_type,
            "level": config.rift_level,
        }
        if params.get("train_dataset") is not None:
            params["train_dataset"] = prepare_rewards(params["train_dataset"], name="train", **prepare)
        eval_dataset = params.get("eval_dataset")
        if isinstance(eval_dataset, dict):
            params["eval_dataset"] = {k: prepare_rewards(v, name=k, **prepare) for k, v in eval_dataset.items()}
        elif eval_dataset is not None:
            params["eval_dataset"] = prepare_rewards(eval_dataset, name="eval", **prepare)
        self._rift_prepare = prepare
        self._rift_loss = loss_name
        self._rift_stats = {"train": StatsWindow("train"), "eval": StatsWindow("eval")}

        # SFTTrainer.__init__ accepts only its own loss types: it sees "nll" while it builds
        # (its other loss_type checks concern "dft", refused above for RIFT by construction).
        rift_type = config.loss_type
        config.loss_type = "nll"
        try:
            super().__init__(**params)
        finally:
            config.loss_type = rift_type

        pc = self.accelerator.parallelism_config
        if pc is not None and getattr(pc, "sp_enabled", False) and getattr(pc, "sp_backend", None) == "deepspeed":
            raise ValueError(
                f"DeepSpeed sequence parallelism must be off with loss_type={rift_type!r}: under it the Trainer "
                "reduces the model's own NLL across ranks, which would replace RIFT"
            )
        self.data_collator = RiftCollator(
            self.data_collator,
            column=config.reward_column,
            group_column=config.group_column,
            padding_free=self.padding_free,
            truncation_mode=config.truncation_mode,
        )
        # compute_loss returns sum / num_items_in_batch (or divides by the accumulation steps itself).
        self.loss_is_scaled_for_ga = True
        choice = self.args.rift_fused_head if env_enabled() else "false"
        self._rift_fused = choice != "false"
        refusal = head_refusal(self.model) if choice == "rift" else None
        if refusal is not None:
            warnings.warn(
                f"rift_fused_head: rift-losses' chunked LM head cannot serve this model, TRL's fused head (if the "
                f"model has it) or the logits are used instead: {refusal}",
                stacklevel=2,
            )
        # rift-losses' head first (measured leaner than TRL's 32768-token tile: docs/performance.md), else TRL's
        self._rift_own_head = choice == "rift" and refusal is None

    # ---- data -------------------------------------------------------------------------------

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self._rift_on:
            extra = [c for c in (self.args.reward_column, TOKEN_REWARDS_COLUMN) if c not in self._signature_columns]
            self._signature_columns = [*self._signature_columns, *extra]

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        # A RIFT loss trains the assistant turns only: the adapter tokenizes `messages` rows itself
        # (assistant mask and per-turn rewards), TRL takes them as already tokenized.
        if self._rift_on and formatting_func is None:
            from trl.data_utils import _tokenize

            dataset = tokenize_conversations(
                dataset,
                processing_class,
                column=args.reward_column,
                name=dataset_name,
                chat_template=self.chat_template,
                assistant_only_loss=args.assistant_only_loss,
                tokenize=_tokenize,
            )
        return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        if self._rift_on and eval_dataset is not None and not isinstance(eval_dataset, str):
            if isinstance(eval_dataset, dict):
                eval_dataset = {k: prepare_rewards(v, name=k, **self._rift_prepare) for k, v in eval_dataset.items()}
            else:
                eval_dataset = prepare_rewards(eval_dataset, name=metric_key_prefix, **self._rift_prepare)
        return super().evaluate(eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def _get_num_items_in_batch(self, batch_samples, device):
        if not self._rift_on or self.args.rift_level != "sequence":
            return super()._get_num_items_in_batch(batch_samples, device)
        # Sequence level: the denominator counts samples with a target token. The Trainer sums
        # (and gathers over ranks) it as it does tokens, from one proxy target per such sample.
        return super()._get_num_items_in_batch(sequence_proxies(batch_samples), device)

    # ---- loss -------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self._rift_on:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        rewards = inputs.pop(REWARDS_KEY, None)
        if rewards is None:
            raise RuntimeError(
                f"loss_type={self.args.loss_type!r} got a batch without rewards ({REWARDS_KEY!r}): it did not come "
                "through RiftSFTTrainer's collator; refusing to train it with another loss"
            )
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        if self.aux_loss_enabled:
            inputs["output_router_logits"] = True
        labels = inputs["labels"]
        base = _base_model(self.accelerator.unwrap_model(model))
        rift = {"loss": self._rift_loss, "level": self.args.rift_level, "num_items_in_batch": num_items_in_batch}
        if self._rift_own_head and not return_outputs and model.training and torch.is_grad_enabled():
            # rift-losses' chunked head in a training step: the logits are never built, one chunk at a time.
            with fused_lm_head(model, labels) as step:
                outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            logprobs, mask = fused_logprobs(step, outputs.logits)
            loss, stats = batch_loss(labels, rewards, logprobs=logprobs, mask=mask, **rift)
        elif self._rift_fused and not return_outputs and _is_trl_fused_forward(base):
            # TRL's fused LM head: log p of each next-token label, (B, T-1), logits never built.
            outputs = model(**inputs, fused_lm_head=True)
            loss, stats = batch_loss(
                labels, rewards, logprobs=outputs.log_probs, mask=outputs.label_mask.bool(), **rift
            )
        else:
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            # In place only when nothing else reads these logits (not returned, training with grad).
            inplace = inplace_grad_allowed(
                self.args.rift_inplace_grad and not return_outputs, training=model.training, logits=outputs.logits
            )
            loss, stats = batch_loss(labels, rewards, logits=outputs.logits, inplace_grad=inplace, **rift)
        # The Trainer's own rule (this compute_loss returns the loss it logs): num_items_in_batch counts
        # every rank's tokens with average_tokens_across_devices, and DDP averages gradients.
        scale = logged_loss_scale(self, num_items_in_batch, counts_items=True)
        loss = loss * scale if scale != 1.0 else loss
        if num_items_in_batch is None and mode == "train":
            # A per-micro-batch mean (model without loss kwargs): average over the accumulation steps here.
            loss = loss / self.current_gradient_accumulation_steps
            scale = 1.0 / self.current_gradient_accumulation_steps
        if self.aux_loss_enabled and getattr(outputs, "aux_loss", None) is not None:
            steps = (
                self.current_gradient_accumulation_steps if (num_items_in_batch is not None or mode == "train") else 1
            )
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss / steps
        self._rift_stats[mode].add(stats, scale=scale, global_step=self.state.global_step)
        self._log_token_metrics(mode, inputs, outputs)
        return (loss, outputs) if return_outputs else loss

    def _log_token_metrics(self, mode, inputs, outputs) -> None:
        """TRL's own metrics: ``entropy`` and ``mean_token_accuracy`` (fused path), ``num_tokens``."""
        if getattr(outputs, "is_top1", None) is not None:  # as SFTTrainer.compute_loss logs them
            num_valid = self.accelerator.gather_for_metrics(outputs.label_mask.sum()).sum()
            entropy_sum = self.accelerator.gather_for_metrics(outputs.entropy.detach().sum()).sum()
            num_correct = self.accelerator.gather_for_metrics(outputs.is_top1.sum()).sum()
            self._metrics[mode]["entropy"].append((entropy_sum / num_valid).item() if num_valid > 0 else 0.0)
            self._metrics[mode]["mean_token_accuracy"].append(
                (num_correct / num_valid).item() if num_valid > 0 else 0.0
            )
        if mode == "train":
            if "attention_mask" in inputs:
                count = inputs["attention_mask"].sum()
            else:
                count = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
            self._total_train_tokens += self.accelerator.gather_for_metrics(count).sum().item() // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    # ---- logs -------------------------------------------------------------------------------

    def log(self, logs, start_time=None):
        if self._rift_on:
            mode = "train" if self.model.training else "eval"
            if mode == "eval" or "loss" in logs:
                for key, value in self._rift_window(mode).items():
                    self._metrics[mode][f"rift/{key}"] = [value]
        return super().log(logs, start_time)

    def _rift_window(self, mode: str) -> dict:
        """The RIFT statistics since the last log: per optimizer step (train) or eval batch (eval)."""
        return self._rift_stats[mode].summary(global_step=self.state.global_step, device=self.args.device)


def _warn_ignored_rewards(dataset, config) -> None:
    """TRL's own loss on a dataset with a reward column: say loudly that the rewards are ignored."""
    columns = getattr(dataset, "column_names", None) or []
    if config.reward_column not in columns:
        return
    negatives, numbers = count_negative(dataset[config.reward_column])
    hint = f"Use loss_type='rift' (one of {list(RIFT_LOSS_TYPES)}) to learn from the rewards."
    if negatives:
        hint = f"{negatives} of {numbers} rows have {config.reward_column} < 0. {hint}"
    warnings.warn(
        ignored_reward_warning(dataset="train", column=config.reward_column, loss=config.loss_type, hint=hint),
        stacklevel=3,
    )
