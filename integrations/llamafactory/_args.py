"""The RIFT options as real LLaMA-Factory argument fields, and what they refuse.

Imported by :func:`._autoload.register` once ``llamafactory.hparams.parser`` is loaded (so
importing LLaMA-Factory here costs nothing more). :class:`RiftFinetuningArguments` extends
LLaMA-Factory's ``FinetuningArguments`` with the ``rift_*`` fields and is swapped into the
parser's argument lists: YAML keys then parse, type-check and print in ``--help`` like
LLaMA-Factory's own (``use_dft_loss`` is the model), and a misspelt key is an unknown key.

After a config with ``use_rift_loss: true`` is parsed, :func:`check_config` refuses, before any
data is read, every combination that cannot train RIFT correctly, and the runtime pieces
(:mod:`._data`, :mod:`._trainer`) are installed.
"""

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Literal

from llamafactory.hparams.finetuning_args import FinetuningArguments

from rift_losses import LEVELS, LOSSES, NORMALIZATIONS

from .._common import ignored_reward_warning, one_of
from ._run import RiftConfig

#: Values of ``rift_reward_normalization``: "none" or a group normalization of the core.
NORMALIZATION_CHOICES = ("none", *NORMALIZATIONS)

# Built from the core's registries (the single source of truth for the names).
_LossName = Literal[tuple(LOSSES)]
_NormalizationName = Literal[NORMALIZATION_CHOICES]
_LevelName = Literal[tuple(LEVELS)]


@dataclass
class RiftFinetuningArguments(FinetuningArguments):
    r"""LLaMA-Factory's finetuning arguments plus the RIFT loss options."""

    use_rift_loss: bool = field(
        default=False,
        metadata={
            "help": "Whether to use the RIFT loss (reward-weighted SFT, arXiv 2601.09253). Needs a 'reward' "
            "column mapped in dataset_info.json."
        },
    )
    rift_loss: _LossName = field(
        default="rift",
        metadata={
            "help": f"One of {', '.join(map(repr, LOSSES))}; per target token with reward r: 'rift' "
            "(eq. 5): -r log p if r > 0, -r p if r < 0; 'naive' (eq. 1): -r log p (unbounded below)."
        },
    )
    rift_reward_normalization: _NormalizationName = field(
        default="none",
        metadata={
            "help": "Normalize rewards over whole groups of the dataset (eq. 6-8; needs a 'group' "
            f"column): one of {', '.join(map(repr, NORMALIZATION_CHOICES))}."
        },
    )
    rift_level: _LevelName = field(
        default="token",
        metadata={
            "help": "'token' applies the loss per target token (default); 'sequence' to pi(y|x) of "
            "whole responses (eq. 5 read literally; short responses only)."
        },
    )
    rift_inplace_grad: bool = field(
        default=True,
        metadata={
            "help": "Write the logits gradient over the logits buffer in training steps (one logits-sized "
            "buffer less; same values and gradients). false allocates it."
        },
    )

    rift_fused_head: bool = field(
        default=True,
        metadata={
            "help": "Compute the RIFT loss from the final hidden states and the LM head a chunk of tokens at a "
            "time in training steps: the (B, T, V) logits are never built (same values and gradients; one more "
            "matmul per step). false (or RIFT_FUSED_HEAD=0) materializes the logits."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        # HfArgumentParser.parse_dict (the YAML route) does not check Literal choices.
        one_of("rift_loss", self.rift_loss, LOSSES)
        one_of("rift_reward_normalization", self.rift_reward_normalization, NORMALIZATION_CHOICES)
        one_of("rift_level", self.rift_level, LEVELS)
        for name in ("use_rift_loss", "rift_inplace_grad", "rift_fused_head"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be true or false, got {getattr(self, name)!r}")


def check_config(model_args, data_args, training_args, finetuning_args, *, mca: bool = False) -> None:
    """Refuse, with the reason, every option that cannot be combined with ``use_rift_loss``."""
    if mca:
        raise ValueError(
            "use_rift_loss must not be combined with USE_MCA=1, got both: Megatron's trainer computes its own "
            "loss and does not call the compute_loss_func that RIFT replaces"
        )
    if finetuning_args.stage != "sft":
        raise ValueError(f"use_rift_loss must be used with stage: sft, got stage: {finetuning_args.stage}")
    other_losses = [
        f.name
        for f in dataclasses.fields(finetuning_args)
        if f.name.startswith("use_")
        and f.name.endswith("_loss")
        and f.name != "use_rift_loss"
        and getattr(finetuning_args, f.name)
    ]
    if other_losses:
        raise ValueError(
            f"use_rift_loss must not be combined with another loss option, got {', '.join(other_losses)}: true; "
            "each replaces the SFT loss (LLaMA-Factory's compute_loss_func), so one would silently override "
            "the other. Choose one."
        )
    if getattr(training_args, "label_smoothing_factor", 0.0):
        raise ValueError(
            f"label_smoothing_factor must be 0 with use_rift_loss, got {training_args.label_smoothing_factor}: "
            "the Trainer drops label smoothing when a custom loss is set"
        )
    if getattr(finetuning_args, "use_hyper_parallel", False):
        raise ValueError(
            "use_rift_loss must not be combined with use_hyper_parallel, got both: that backend runs its own "
            "trainer, which RIFT does not reach"
        )
    if data_args.packing or data_args.neat_packing:
        raise ValueError(
            f"packing must be false with use_rift_loss, got packing: {data_args.packing}, neat_packing: "
            f"{data_args.neat_packing}: LLaMA-Factory's packed processor concatenates several samples into one "
            "row without recording which tokens came from which sample, so per-sample rewards cannot follow "
            "their tokens. Turn packing off (batches of unpacked samples train the same loss)."
        )
    if data_args.streaming:
        raise ValueError(
            "streaming must be false with use_rift_loss, got streaming: true: every reward is validated and "
            "(with rift_reward_normalization) normalized over whole groups before the first step, which needs "
            "the whole dataset"
        )


def datasets_with_rewards(data_args) -> list[tuple[str, str]]:
    """``(dataset, reward column)`` for the run's datasets whose ``dataset_info.json`` entry maps
    a ``"reward"`` column (read from the local file; [] when there is none)."""
    names = [*(data_args.dataset or []), *(data_args.eval_dataset or [])]
    dataset_dir = data_args.dataset_dir
    path = os.path.join(dataset_dir, "dataset_info.json") if isinstance(dataset_dir, str) else ""
    if not names or not os.path.isfile(path):
        return []
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return []  # LLaMA-Factory itself reports an unreadable dataset_info.json
    found = []
    for name in names:
        columns = (info.get(name) or {}).get("columns") or {} if isinstance(info, dict) else {}
        if isinstance(columns, dict) and columns.get("reward"):
            found.append((name, columns["reward"]))
    return found


def _warn_ignored_rewards(data_args) -> None:
    for name, column in datasets_with_rewards(data_args):
        logging.getLogger("rift_losses").warning(
            ignored_reward_warning(
                dataset=name,
                column=column,
                loss="plain SFT cross-entropy (use_rift_loss is not set)",
                hint="Set use_rift_loss: true to train RIFT on the rewards, or drop the wrong responses (RFT).",
            )
        )


def _after_parse(parsed, *, mca: bool):
    model_args, data_args, training_args, finetuning_args = parsed[0], parsed[1], parsed[2], parsed[3]
    if not getattr(finetuning_args, "use_rift_loss", False):
        _warn_ignored_rewards(data_args)
        return parsed
    check_config(model_args, data_args, training_args, finetuning_args, mca=mca)
    data_args.rift_config = RiftConfig.from_args(finetuning_args)
    from . import _data, _trainer

    _data.install()
    _trainer.install()
    return parsed


def patch_parser(parser_module) -> None:
    """Swap :class:`RiftFinetuningArguments` into the parser's argument lists; check after parsing."""
    base = parser_module.FinetuningArguments
    for name in ("_TRAIN_ARGS", "_INFER_ARGS", "_EVAL_ARGS", "_TRAIN_MCA_ARGS"):
        classes = getattr(parser_module, name, None)
        if isinstance(classes, list):
            classes[:] = [RiftFinetuningArguments if c is base else c for c in classes]

    for name, mca in (("_parse_train_args", False), ("_parse_train_mca_args", True)):
        original = getattr(parser_module, name)

        def parse(args=None, _original=original, _mca=mca):
            return _after_parse(_original(args), mca=_mca)

        parse.__wrapped__ = original
        setattr(parser_module, name, parse)
