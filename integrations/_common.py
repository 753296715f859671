"""Host-independent helpers shared by the framework adapters (no host import here).

Everything here is a small pure function (or a tiny accumulator) over Python values and
torch tensors: reading and validating one reward per dataset row, the group of a row (its
``group`` column, else its prompt), whole-dataset group normalization with the core's
:func:`rift_losses.normalize_rewards`, per-token rewards for packed batches, and the
aggregation of :class:`rift_losses.LossStats` for training logs. The adapters
(``integrations/swift``, ``integrations/llamafactory``) own everything host-specific.

Notation for shapes: N rows of a dataset, B samples of a batch, T tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Iterable, Sequence

#: The default dataset column names the adapters read (``rift-losses convert`` writes them).
REWARD_COLUMN = "reward"
GROUP_COLUMN = "group"


def loss_variants(prefix: str = "rift") -> dict[str, tuple[str, str | None]]:
    """Host loss-type names -> ``(core loss name, normalization or None)``.

    Built from the core's :data:`rift_losses.LOSSES` and :data:`rift_losses.NORMALIZATIONS`
    (the single source of truth): ``prefix`` is the core's ``"rift"`` loss (eq. 5),
    ``f"{prefix}_{name}"`` each other core loss (``rift_naive``: eq. 1), and
    ``f"{prefix}_{method}"`` RIFT on rewards normalized over whole groups (eq. 6-8).
    """
    from rift_losses import LOSSES, NORMALIZATIONS

    variants: dict[str, tuple[str, str | None]] = {}
    for name in LOSSES:
        variants[prefix if name == "rift" else f"{prefix}_{name}"] = (name, None)
    for method in NORMALIZATIONS:
        variants[f"{prefix}_{method}"] = ("rift", method)
    return variants


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_reward(value: Any, *, column: str, where: str) -> float:
    """One row's reward as a float; ``ValueError`` naming the row when it is not a finite number.

    Accepts ints and floats (and numpy scalars); refuses bools, strings, None, NaN and inf.
    ``where`` names the row, e.g. ``"row 3 of dataset 'rewards.jsonl'"``.
    """
    number = value
    if hasattr(value, "item") and not isinstance(value, (int, float)) and getattr(value, "ndim", 1) == 0:
        number = value.item()  # numpy / torch scalar
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise ValueError(f"{column} must be a finite number in every row, got {short(value)} in {where}")
    return float(number)


def read_rewards(values: Sequence[Any], *, column: str, dataset: str) -> list[float]:
    """Validate a dataset's reward column (length N); the first bad row is named (0-based)."""
    return [read_reward(v, column=column, where=f"row {i} of dataset {dataset!r}") for i, v in enumerate(values)]


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    return repr(value)


def prompt_key(messages: Sequence[dict], extra: Any = None) -> str:
    """The prompt of a chat row as canonical text: every message before the last assistant turn.

    ``json.dumps(messages[:k], ensure_ascii=False, sort_keys=True)`` where k is the index of the
    last ``"assistant"`` message (the same key ``rift-losses convert`` uses). ``extra`` (e.g.
    the row's tools or media) is appended when given, so rows that differ only there are
    different prompts. Raises ``ValueError`` when there is no assistant message.
    """
    last = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"), default=None)
    if last is None:
        raise ValueError(f"messages must hold an assistant turn (the response), got roles {[m.get('role') for m in messages if isinstance(m, dict)]}")
    key = json.dumps(list(messages[:last]), ensure_ascii=False, sort_keys=True, default=_json_default)
    if extra:
        key += "\x00" + json.dumps(extra, ensure_ascii=False, sort_keys=True, default=_json_default)
    return key


def read_group(value: Any, *, column: str, where: str) -> str:
    """One row's group id (a string or a number) as a hashable key; ``ValueError`` otherwise."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (isinstance(value, str) or number):
        raise ValueError(f"{column} must be a string or a number in every row when the column exists, got {short(value)} in {where}")
    return json.dumps(value, ensure_ascii=False)


def normalize_dataset_rewards(rewards: Sequence[float], keys: Sequence[Any], *, method: str) -> list[float]:
    """Normalize rewards over whole groups of a dataset (paper eq. 6-8), in float64.

    ``rewards`` and ``keys`` are the N rows' rewards and hashable group keys. Calls the core's
    :func:`rift_losses.normalize_rewards` once over all N rows, so each group is normalized
    with *all* of its responses, not the few that share a batch.
    """
    import torch

    from rift_losses import normalize_rewards

    out = normalize_rewards(torch.tensor(list(rewards), dtype=torch.float64), list(keys), method=method)
    return out.tolist()


def per_token_rewards(rewards: Sequence[float], lengths: Sequence[int]) -> list[float]:
    """Rewards of packed samples, one per token: ``[r_0] * lengths[0] + [r_1] * lengths[1] + ...``."""
    if len(rewards) != len(lengths):
        raise ValueError(f"rewards must have one value per packed sample, got {len(rewards)} rewards for {len(lengths)} samples")
    out: list[float] = []
    for r, n in zip(rewards, lengths):
        out.extend([float(r)] * int(n))
    return out


def count_negative(rewards: Iterable[Any]) -> tuple[int, int]:
    """``(negatives, numbers)``: how many values are numbers < 0, and how many are numbers at all."""
    negatives = numbers = 0
    for value in rewards:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            continue
        numbers += 1
        negatives += value < 0
    return negatives, numbers


def negative_reward_warning(*, dataset: str, column: str, negatives: int, rows: int, loss: str, hint: str) -> str:
    """The banner printed when rewards < 0 meet a loss that ignores rewards."""
    return _banner(
        f"rift-losses: dataset {dataset!r} has {negatives} of {rows} rows with {column} < 0, but the loss\n"
        f"({loss}) ignores rewards: it will train on those WRONG responses exactly as on the right ones.\n{hint}"
    )


def ignored_reward_warning(*, dataset: str, column: str, loss: str, hint: str) -> str:
    """The banner printed when a dataset maps a reward column but the loss ignores rewards."""
    return _banner(
        f"rift-losses: dataset {dataset!r} maps a reward column ({column!r}), but the loss\n"
        f"({loss}) ignores rewards: responses with negative rewards (wrong answers) are trained\n"
        f"exactly as the right ones.\n{hint}"
    )


def _banner(text: str) -> str:
    bar = "!" * 88
    return f"\n{bar}\n{text}\n{bar}"


class StatsAccumulator:
    """Sums :class:`rift_losses.LossStats` over calls without a host sync (tensors stay on device).

    ``add(stats, scale=s)`` adds ``s * pos_loss`` and ``s * neg_loss`` (the loss parts as the host
    scales the loss it logs) and the token counts; ``totals()`` returns the summed 0-dim tensors
    in a fixed order (for one all-reduce) and ``reset()`` clears them.
    """

    FIELDS = ("pos_loss", "neg_loss", "pos_tokens", "neg_tokens", "neg_prob_sum", "updates")

    def __init__(self):
        self._sums = None

    def add(self, stats, *, scale: float = 1.0) -> None:
        import torch

        values = torch.stack(
            [
                stats.pos_loss.detach().float() * scale,
                stats.neg_loss.detach().float() * scale,
                stats.pos_tokens.detach().float(),
                stats.neg_tokens.detach().float(),
                stats.neg_prob_sum.detach().float(),
                torch.ones((), device=stats.pos_loss.device),
            ]
        )
        self._sums = values if self._sums is None else self._sums + values

    def totals(self, device=None):
        """The sums as a float32 tensor ``(len(FIELDS),)`` (zeros when nothing was added)."""
        import torch

        if self._sums is None:
            return torch.zeros(len(self.FIELDS), device=device)
        return self._sums if device is None else self._sums.to(device)

    def reset(self) -> None:
        self._sums = None


def stats_summary(totals: Sequence[float], *, units: float, world_size: int = 1) -> dict[str, float | None]:
    """Log values from summed :class:`StatsAccumulator` totals (already all-reduced over ranks).

    Loss parts are divided by ``world_size * units`` (the host logs its loss as a mean over
    ranks, per optimizer step or evaluation batch), token counts by ``units``;
    ``neg_prob`` is the mean probability of the negative-reward target tokens (None if none).
    """
    pos_loss, neg_loss, pos_tokens, neg_tokens, neg_prob_sum, _ = (float(t) for t in totals)
    if units <= 0:
        return {"pos_loss": None, "neg_loss": None, "pos_tokens": None, "neg_tokens": None, "neg_prob": None}
    return {
        "pos_loss": pos_loss / (world_size * units),
        "neg_loss": neg_loss / (world_size * units),
        "pos_tokens": pos_tokens / units,
        "neg_tokens": neg_tokens / units,
        "neg_prob": neg_prob_sum / neg_tokens if neg_tokens > 0 else None,
    }
