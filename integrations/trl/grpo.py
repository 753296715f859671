"""Online RIFT: the RIFT loss inside TRL 1.16's ``GRPOTrainer`` (sampling and RIFT updates interleave).

``RiftGRPOConfig`` is ``GRPOConfig`` whose ``loss_type`` also takes the RIFT names of the core's
registry (``_common.loss_variants()``: ``rift``, ``rift_naive``, ``rift_gaussian``,
``rift_gpg_mean``, ``rift_gpg_scaled``); TRL's own names (``dapo``, ``grpo``, ...) are unchanged.
``RiftGRPOTrainer`` is ``GRPOTrainer``; with a RIFT ``loss_type`` its loss is, per micro-batch,

    loss = sum_{i, t in completion_i} head(log p_{i,t}, r_i) / D                (eq. 5; eq. 1 for rift_naive)

where ``head`` is the core's (:data:`rift_losses.LOSSES`), ``log p`` TRL's per-token log-probs of
the sampled completion tokens (``_get_per_token_logps_and_entropies``), ``r_i`` one reward per
completion and ``D`` TRL's ``dapo`` denominator: the completion tokens of the whole generation batch
(all ranks) divided by the number of processes, times ``gradient_accumulation_steps /
steps_per_generation``. Summed over the micro-batches of an optimizer step and averaged over ranks
by DDP, the gradient is that of ``sum over every token of the generation batch / its token count``:
gradient accumulation and data parallel equal one big batch. ``rift_level="sequence"`` applies the
head once per completion to ``sum_t log p_t`` and counts completions instead of tokens.

The reward ``r_i``: the reward functions' weighted sum (``reward_weights``), exactly the sum TRL
logs as ``reward`` (the paper's +1 / -0.2 is one reward function returning those), then, for
``rift_<method>``, :func:`rift_losses.normalize_rewards` within each prompt's group of
``num_generations`` completions (``gaussian`` is GRPO's ``(r - mean) / std``, without TRL's 1e-4).
A completion for which every reward function returned None gets r = 0 (no gradient; TRL gives it
advantage 0) and is left out of its group's statistics. TRL's ``advantages`` are still computed
and logged, never used.

TRL options without a meaning for RIFT are refused when the config is built, before any model
loads (see :meth:`RiftGRPOConfig._refuse_meaningless`): ``beta > 0`` (a KL to a reference model;
RIFT needs none), ``num_iterations > 1`` and a generation batch reused across optimizer steps (stale
samples: RIFT has no importance ratio to correct them), the clipping options (``epsilon``,
``epsilon_high``, ``delta``, ``importance_sampling_level``, ``off_policy_mask_threshold``: they clip
or mask a ratio RIFT does not have), ``scale_rewards``/``multi_objective_aggregation`` other than
the default (they shape TRL's advantages; RIFT's normalization is the ``loss_type``), and the
entropy options (``entropy_coef``, ``use_adaptive_entropy``, ``top_entropy_quantile``).
vLLM's importance-sampling correction (``use_vllm`` with ``vllm_importance_sampling_correction``)
keeps its defined meaning: each token's term is multiplied by TRL's (truncated or masked)
trainer/sampler ratio, as for TRL's own losses.

Logged per step beside TRL's metrics: ``rift/pos_loss``, ``rift/neg_loss`` (they add up to
``loss``), ``rift/pos_tokens``, ``rift/neg_tokens``, ``rift/neg_prob`` (mean p of the
negative-reward tokens).

Notation: B completions of a micro-batch, T completion tokens, G generations per prompt.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig, GRPOTrainer

from rift_losses import LEVELS, logprob_loss, normalize_rewards

from .._core.stats import StatsWindow
from .config import RIFT_LOSS_TYPES, RiftLossChoice

#: TRL 1.16's own GRPO loss types (``GRPOTrainer._compute_loss``).
TRL_GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo", "cispo", "sapo", "vespo")

#: Keys ``_generate_and_score_completions`` adds to TRL's batch for the RIFT loss.
REWARDS_KEY = "rift_rewards"
SEQUENCES_KEY = "rift_num_sequences"

#: GRPOConfig options that have no meaning for RIFT, with their default and the reason.
_MEANINGLESS = {
    "beta": "it adds a KL penalty to a reference model; RIFT trains without a reference model",
    "num_iterations": "it reuses stale samples for several updates, which RIFT cannot correct (no importance ratio)",
    "epsilon": "it clips the importance ratio, which RIFT does not have",
    "epsilon_high": "it clips the importance ratio, which RIFT does not have",
    "delta": "it clips the importance ratio, which RIFT does not have",
    "importance_sampling_level": "it shapes the importance ratio, which RIFT does not have",
    "off_policy_mask_threshold": "it masks tokens by the importance ratio, which RIFT does not have",
    "scale_rewards": "it scales TRL's advantages, which RIFT does not read; pick the normalization with "
    "loss_type (rift_gaussian, rift_gpg_mean, rift_gpg_scaled)",
    "multi_objective_aggregation": "it shapes TRL's advantages, which RIFT does not read; RIFT's reward is the "
    "weighted sum of the reward functions",
    "entropy_coef": "TRL adds its entropy bonus only inside its own losses",
    "use_adaptive_entropy": "TRL adds its entropy bonus only inside its own losses",
    "top_entropy_quantile": "TRL's entropy mask acts inside its own losses only",
}


@dataclass
class RiftGRPOConfig(RiftLossChoice, GRPOConfig):
    """``GRPOConfig`` plus the RIFT options (see the module docstring).

    Args (beyond ``GRPOConfig``'s):
        loss_type: TRL's (``"dapo"``, ``"grpo"``, ...: unchanged) or one of :data:`RIFT_LOSS_TYPES`.
        rift_level: ``"token"`` (every completion token weighted by its completion's reward) or
            ``"sequence"`` (the head applied once to each completion's summed log-prob).
    """

    loss_type: str = field(
        default="dapo",
        metadata={
            "help": "TRL's GRPO loss types, or a RIFT loss on the reward functions' weighted sum: "
            + ", ".join(repr(name) for name in RIFT_LOSS_TYPES)
            + ".",
            "choices": [*TRL_GRPO_LOSS_TYPES, *RIFT_LOSS_TYPES],
        },
    )
    rift_level: str = field(
        default="token",
        metadata={"help": "RIFT granularity: 'token' or 'sequence' (RIFT loss types only).", "choices": list(LEVELS)},
    )

    def __post_init__(self):
        super().__post_init__()
        valid = [*TRL_GRPO_LOSS_TYPES, *RIFT_LOSS_TYPES]
        if self.loss_type not in valid:
            raise ValueError(f"loss_type must be one of {valid}, got {self.loss_type!r}")
        if self.rift_level not in LEVELS:
            raise ValueError(f"rift_level must be one of {list(LEVELS)}, got {self.rift_level!r}")
        self._check_level_for_loss()
        if self.is_rift:
            self._refuse_meaningless()

    def _refuse_meaningless(self) -> None:
        """TRL options that would be ignored by (or silently change) the RIFT loss: refused with the reason."""
        defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig) if f.name in _MEANINGLESS}
        for name, why in _MEANINGLESS.items():
            value = getattr(self, name)
            if value != defaults[name]:
                raise ValueError(
                    f"{name} must be {defaults[name]!r} with loss_type={self.loss_type!r}, got {value!r}: {why}"
                )
        if self.gradient_accumulation_steps % self.steps_per_generation != 0:
            raise ValueError(
                f"steps_per_generation must divide gradient_accumulation_steps with loss_type={self.loss_type!r}, got "
                f"steps_per_generation={self.steps_per_generation} and gradient_accumulation_steps="
                f"{self.gradient_accumulation_steps}: a generation batch would be trained on after the optimizer "
                "step that follows its sampling (stale samples; RIFT has no importance ratio to correct them)"
            )
        if self.use_vllm and self.vllm_importance_sampling_correction and self.rift_level == "sequence":
            raise ValueError(
                f"rift_level must be 'token' with use_vllm and vllm_importance_sampling_correction "
                f"(loss_type={self.loss_type!r}), got 'sequence': the trainer/sampler ratio weights tokens; "
                "set vllm_importance_sampling_correction=False to train sequence-level RIFT on vLLM samples"
            )


def completion_rewards(rewards_per_func, weights, *, num_generations: int, normalization: str | None):
    """One RIFT reward per completion from TRL's per-function rewards, normalized per prompt group.

    Formula: ``r_i = sum_k w_k * R_ik`` (NaN terms skipped; a row of only NaN is unscorable), then
    ``normalize_rewards(r, i // G, method=normalization)`` over the scorable rows (eq. 6-8);
    unscorable rows get 0.

    Reference: ``r = (R * w).nansum(1); r[R.isnan().all(1)] = 0`` (no normalization).

    Args:
        rewards_per_func: ``(N, K)`` float, every rank's completions (TRL gathers them), NaN where a
            reward function returned None; rows ``g*G .. g*G+G-1`` are prompt g's group.
        weights: ``(K,)`` the reward weights.
        num_generations: G.
        normalization: a name of :data:`rift_losses.NORMALIZATIONS`, or None.

    Returns:
        ``(N,)`` float32 rewards on ``rewards_per_func``'s device.
    """
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    raw = (rewards_per_func.double() * weights.to(rewards_per_func.device).double()[None, :]).nansum(dim=1)
    raw = torch.where(unscorable, 0.0, raw)
    if normalization is None:
        return raw.float()
    groups = torch.arange(raw.shape[0], device=raw.device) // num_generations
    keep = ~unscorable
    out = torch.zeros_like(raw)
    out[keep] = normalize_rewards(raw[keep], groups[keep], method=normalization)
    return out.float()


class RiftGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer``; with a RIFT ``loss_type`` in a :class:`RiftGRPOConfig`, trains RIFT online.

    Same arguments as ``GRPOTrainer``. See the module docstring for the loss and the refusals.
    """

    _tag_names = ["trl", "grpo", "rift"]

    def __init__(self, model, reward_funcs, args=None, *pos, **kwargs):
        if args is not None and not isinstance(args, RiftGRPOConfig) and args.loss_type in RIFT_LOSS_TYPES:
            raise TypeError(
                f"args must be a RiftGRPOConfig for loss_type={args.loss_type!r}, got {type(args).__name__}: "
                "only RiftGRPOConfig checks the options that have no meaning for RIFT"
            )
        self._rift_on = isinstance(args, RiftGRPOConfig) and args.is_rift
        if self._rift_on:
            self._rift_loss, self._rift_normalization = args.rift_loss
            self._rift_stats = {"train": StatsWindow("train"), "eval": StatsWindow("eval")}
            self._rift_rewards_per_func = None
        super().__init__(model, reward_funcs, args, *pos, **kwargs)

    # ---- rewards ----------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self._rift_on:
            self._rift_rewards_per_func = rewards_per_func  # (N, K), every rank's completions
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if not self._rift_on:
            return output
        mode = "train" if self.model.training else "eval"
        per_func, self._rift_rewards_per_func = self._rift_rewards_per_func, None
        if per_func is None:
            raise RuntimeError(
                f"loss_type={self.args.loss_type!r}: TRL produced a batch without calling _calculate_rewards; "
                "refusing to train it without rewards"
            )
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        rewards = completion_rewards(
            per_func, self.reward_weights, num_generations=num_generations, normalization=self._rift_normalization
        )
        local = output["completion_ids"].shape[0]
        start = self.accelerator.process_index * local
        output[REWARDS_KEY] = rewards[start : start + local]
        mask = output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]
        # Completions with a target token, over every rank: the denominator of rift_level="sequence".
        output[SEQUENCES_KEY] = self.accelerator.gather(mask.bool().any(dim=-1).sum()).sum()
        return output

    # ---- loss -------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        if not self._rift_on:
            return super()._compute_loss(model, inputs)
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            completion_ids.size(1),
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
            **{key: inputs.get(key) for key in _MULTIMODAL_KEYS},
        )
        rewards = inputs[REWARDS_KEY]
        if self.use_vllm and self.vllm_importance_sampling_correction:
            # TRL's trainer/sampler ratio, (B, T) or (B, 1): each token's term is weighted by it, as in TRL's losses.
            rewards = rewards[:, None] * inputs["importance_sampling_ratio"].expand_as(per_token_logps)
        mode = "train" if self.model.training else "eval"
        # TRL's dapo rule: the items of the generation batch (every rank), per process and accumulation window.
        items = inputs[SEQUENCES_KEY] if self.args.rift_level == "sequence" else inputs["num_items_in_batch"]
        normalizer = items.clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        loss, stats = logprob_loss(
            per_token_logps,
            mask.bool(),
            rewards,
            loss=self._rift_loss,
            reduction="mean",
            num_items_in_batch=normalizer,
            level=self.args.rift_level,
            return_stats=True,
        )
        self._rift_stats[mode].add(stats, scale=1.0, global_step=self.state.global_step)
        if self.aux_loss_enabled:
            steps = self.current_gradient_accumulation_steps if mode == "train" else 1.0
            loss = loss + self.router_aux_loss_coef * aux_loss / steps
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())
        totals = self.accelerator.reduce(
            torch.stack([(entropies * mask).sum(), mask.sum().float()]).detach(), reduction="sum"
        )
        self._metrics[mode]["entropy"].append((totals[0] / totals[1].clamp(min=1.0)).item())
        return loss

    # ---- logs -------------------------------------------------------------------------------

    def log(self, logs, start_time=None):
        if self._rift_on:
            mode = "train" if self.model.training else "eval"
            if mode == "eval" or "loss" in logs:
                window = self._rift_stats[mode].summary(global_step=self.state.global_step, device=self.args.device)
                for key, value in window.items():
                    self._metrics[mode][f"rift/{key}"] = [value]
        return super().log(logs, start_time)


#: The multimodal inputs ``GRPOTrainer._compute_loss`` passes on to ``_get_per_token_logps_and_entropies``.
_MULTIMODAL_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)
