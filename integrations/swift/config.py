"""The MS-Swift adapter's loss types, environment knobs and refusals (no host import here).

MS-Swift's argument parser rejects options it does not know, so the few knobs RIFT needs
beyond ``--loss_type`` come from environment variables (:data:`KNOBS`); the defaults need
none. Every check here raises ``ValueError("<what> must <constraint>, got <value>")`` and
runs before the model is loaded.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._common import GROUP_COLUMN, REWARD_COLUMN, loss_variants
from .._core import hook
from .._core.switch import ENV_FUSED_HEAD, SWITCH_VALUES

#: ``--loss_type`` name -> (core loss, group normalization or None); built from the core's
#: LOSSES and NORMALIZATIONS: rift (eq. 5), rift_naive (eq. 1), rift_gaussian / rift_gpg_mean /
#: rift_gpg_scaled (eq. 5 on rewards normalized over whole groups, eq. 6-8).
LOSS_TYPES: dict[str, tuple[str, str | None]] = loss_variants("rift")
#: The loss type of the core's RIFT loss on raw rewards (eq. 5).
PLAIN_LOSS_TYPE = next(name for name, (core, method) in LOSS_TYPES.items() if core == "rift" and method is None)

ENV_REWARD_COLUMN = "RIFT_REWARD_COLUMN"
ENV_GROUP_COLUMN = "RIFT_GROUP_COLUMN"
ENV_LEVEL = "RIFT_LEVEL"
ENV_INPLACE_GRAD = "RIFT_INPLACE_GRAD"
#: SWITCH_VALUES, the values of RIFT_INPLACE_GRAD and RIFT_FUSED_HEAD: "1" on, "0" off.
#: The opt-out of the zero-flag registration (read by ``_rift_losses_hook``).
ENV_AUTOLOAD = "RIFT_LOSSES_AUTOLOAD"


def _levels() -> tuple[str, ...]:
    from rift_losses import LEVELS

    return tuple(LEVELS)


#: Environment knobs: name -> (default, what it sets). The table in docs/swift.md is written from this.
KNOBS: dict[str, tuple[str, str]] = {
    ENV_REWARD_COLUMN: (REWARD_COLUMN, "the dataset column holding each row's reward (a finite number)"),
    ENV_GROUP_COLUMN: (
        GROUP_COLUMN,
        "the column naming each row's group for rift_gaussian/rift_gpg_mean/rift_gpg_scaled; "
        "without it a row's group is its prompt (every message before the last assistant turn)",
    ),
    ENV_LEVEL: ("token", "'token' (RIFT per target token) or 'sequence' (eq. 5 over whole responses)"),
    ENV_INPLACE_GRAD: (
        "1",
        "'1' writes the logits gradient over the logits buffer in training steps (one logits-sized buffer "
        "less; same values and gradients), '0' allocates it",
    ),
    ENV_FUSED_HEAD: (
        "1",
        "'1' computes the loss of training steps from the final hidden states and the LM head a chunk of "
        "tokens at a time, never building the logits (same values and gradients; no token_acc in training "
        "logs), '0' materializes the logits",
    ),
}

#: The hook triggers whose registration errors a RIFT run re-raises.
TRIGGERS = ("swift.loss", "swift.template.base", "swift.pipelines.train.sft")


@dataclass(frozen=True)
class Knobs:
    """The knob values of one run (see :data:`KNOBS`)."""

    reward_column: str = REWARD_COLUMN
    group_column: str = GROUP_COLUMN
    level: str = "token"
    #: whether RIFT_GROUP_COLUMN was set (then the column must exist; else a row's group is its prompt)
    group_column_given: bool = False
    #: RIFT_INPLACE_GRAD: the logits gradient written over the logits in training steps
    inplace_grad: bool = True
    #: RIFT_FUSED_HEAD: training steps through the fused LM head (integrations/_core/fused.py)
    fused_head: bool = True


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (small strings only)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _column(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, KNOBS[name][0])
    if not value or value != value.strip():
        raise ValueError(f"{name} must be a non-empty column name without surrounding spaces, got {value!r}")
    return value


def read_knobs(environ: Mapping[str, str] | None = None) -> Knobs:
    """The knobs from the environment; ``ValueError`` on a bad value or a misspelt knob name."""
    environ = os.environ if environ is None else environ
    known = set(KNOBS) | {ENV_AUTOLOAD}
    for name in environ:
        if name.startswith("RIFT_") and name not in known:
            close = [k for k in sorted(known) if _edit_distance(name, k) <= 2]
            if close:  # other RIFT_* names may belong to another adapter; near-misses are typos
                raise ValueError(
                    f"environment variable {name} must be one of the rift-losses knobs ({', '.join(sorted(known))}), "
                    f"got {name}={environ[name]!r}; did you mean {close[0]}?"
                )
    level = environ.get(ENV_LEVEL, KNOBS[ENV_LEVEL][0])
    if level not in _levels():
        raise ValueError(f"{ENV_LEVEL} must be one of {', '.join(map(repr, _levels()))}, got {level!r}")
    inplace = environ.get(ENV_INPLACE_GRAD, KNOBS[ENV_INPLACE_GRAD][0])
    if inplace not in SWITCH_VALUES:
        raise ValueError(f"{ENV_INPLACE_GRAD} must be one of {', '.join(map(repr, SWITCH_VALUES))}, got {inplace!r}")
    fused = environ.get(ENV_FUSED_HEAD, KNOBS[ENV_FUSED_HEAD][0])
    if fused not in SWITCH_VALUES:
        raise ValueError(f"{ENV_FUSED_HEAD} must be one of {', '.join(map(repr, SWITCH_VALUES))}, got {fused!r}")
    reward_column = _column(environ, ENV_REWARD_COLUMN)
    group_column = _column(environ, ENV_GROUP_COLUMN)
    if reward_column == group_column:
        raise ValueError(f"{ENV_GROUP_COLUMN} must differ from {ENV_REWARD_COLUMN}, got {group_column!r} for both")
    return Knobs(
        reward_column=reward_column,
        group_column=group_column,
        level=level,
        group_column_given=ENV_GROUP_COLUMN in environ,
        inplace_grad=inplace == "1",
        fused_head=fused == "1",
    )


def reward_column_or_default(environ: Mapping[str, str] | None = None) -> str:
    """The reward column name for the negative-reward warning of non-RIFT runs (never raises)."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_REWARD_COLUMN) or REWARD_COLUMN
    return value.strip() or REWARD_COLUMN


def check_loss_type(loss_type: Any, host_loss_types: Iterable[str]) -> None:
    """Refuse a ``--loss_type`` that names no loss but looks like a RIFT one (``rift_gauss``).

    MS-Swift only warns about an unknown loss type and fails with a bare ``KeyError`` after the
    model has loaded; this runs before. Names that start with ``rift`` (any case) or are close
    to one of :data:`LOSS_TYPES` are checked; other unknown names are left to MS-Swift.
    """
    if not isinstance(loss_type, str) or loss_type in LOSS_TYPES or loss_type in set(host_loss_types):
        return
    lowered = {name.lower(): name for name in LOSS_TYPES}
    close = [lowered[m] for m in difflib.get_close_matches(loss_type.lower(), lowered, n=1, cutoff=0.75)]
    if not loss_type.lower().startswith("rift") and not close:
        return
    raise ValueError(
        f"--loss_type must be one of rift-losses' {', '.join(LOSS_TYPES)} (or an MS-Swift loss type), got "
        f"{loss_type!r}" + (f"; did you mean {close[0]!r}?" if close else "")
    )


def refusals(args: Any, knobs: Knobs) -> list[str]:
    """Why these MS-Swift arguments cannot train a RIFT loss (empty when they can).

    ``args`` is ``SftArguments`` or the trainer's ``TrainingArguments``; missing attributes
    count as their defaults.
    """
    loss_type = getattr(args, "loss_type", None)
    flag = f"--loss_type {loss_type}"
    reasons = []
    rlhf_type = getattr(args, "rlhf_type", None)
    if rlhf_type:
        reasons.append(
            f"--rlhf_type {rlhf_type} cannot be used with {flag}: the RIFT losses are supervised losses for "
            "`swift sft` (and `swift pt`); RLHF trainers read --loss_type as their own loss name"
        )
    task_type = getattr(args, "task_type", None)
    if task_type not in (None, "causal_lm"):
        reasons.append(
            f"--task_type must be causal_lm with {flag}, got {task_type!r}: RIFT weights next-token log-probabilities"
        )
    sp = getattr(args, "sequence_parallel_size", 1) or 1
    if sp > 1:
        reasons.append(
            f"--sequence_parallel_size must be 1 with {flag}, got {sp}: MS-Swift splits each sequence across "
            "ranks and gathers a per-token cross-entropy before calling the loss, so the loss never sees the "
            "log-probabilities and per-token rewards it needs; use data parallelism (NPROC_PER_NODE) instead"
        )
    if getattr(args, "enable_dft_loss", False):
        reasons.append(
            f"--enable_dft_loss cannot be combined with {flag}: the trainer applies DFT's detached-probability "
            "weight to its own per-token cross-entropy, which a RIFT loss does not use, so the flag would be "
            "silently dropped (and DFT reweighting of a reward-weighted loss is not what the paper trains)"
        )
    if getattr(args, "enable_channel_loss", False):
        reasons.append(
            f"--enable_channel_loss cannot be combined with {flag}: the per-channel losses MS-Swift logs are a "
            "cross-entropy it computes separately, not the RIFT loss being trained (and cost a second full "
            "pass over the logits); the RIFT loss logs its own positive/negative parts instead"
        )
    if getattr(args, "streaming", False):
        reasons.append(
            f"--streaming must be false with {flag}: rewards are validated (and, for the normalized variants, "
            "grouped over whole groups) over the whole dataset before the first step, which a stream cannot give"
        )
    for name in ("cached_dataset", "cached_val_dataset"):
        if getattr(args, name, None):
            reasons.append(
                f"--{name} cannot be used with {flag}: a pre-encoded dataset has lost its reward column; "
                "pass the JSONL with --dataset/--val_dataset instead"
            )
    if knobs.level == "sequence" and (getattr(args, "padding_free", False) or getattr(args, "packing", False)):
        reasons.append(
            f"{ENV_LEVEL}=sequence cannot be used with --padding_free/--packing: the sequence level needs one "
            "response per batch row, and packing concatenates several; use the default token level"
        )
    return reasons


def check_args(args: Any, knobs: Knobs) -> None:
    """Raise ``ValueError`` listing every refusal of :func:`refusals`."""
    reasons = refusals(args, knobs)
    if reasons:
        raise ValueError("rift-losses cannot train with these MS-Swift arguments:\n  - " + "\n  - ".join(reasons))


def raise_registration_errors() -> None:
    """Re-raise, loudly, an error the import hook caught while setting up this adapter."""
    hook.raise_registration_errors(TRIGGERS, host="MS-Swift")
