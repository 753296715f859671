"""Host-independent helpers shared by the framework adapters (no host import here).

Everything here is a small pure function (or a tiny accumulator) over Python values and
torch tensors: reading and validating one reward per dataset row (raw JSON files included), the
group of a row (its ``group`` column, else its prompt), whole-dataset group normalization with
the core's :func:`rift_losses.normalize_rewards`, per-token rewards for packed batches, and the
banners of the reward warnings. The row rules themselves (column names, ``short()``, what a
reward is, the group and prompt keys) are :mod:`rift_losses._fields`'s, shared with the
``rift-losses`` command. The loss, statistics and patching are :mod:`._core`'s; the adapters
(``integrations/swift``, ``integrations/llamafactory``, ``integrations/trl``) own everything
host-specific.

Notation for shapes: N rows of a dataset, B samples of a batch, T tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from rift_losses import _fields
from rift_losses._fields import as_reward, group_key, short

# The row rules of the `rift-losses` command (rift_losses/_fields.py): column names, short(), what a
# reward is, the group and prompt keys. Re-exported for the adapters, so both read and group rows alike.
REWARD_COLUMN, GROUP_COLUMN = _fields.REWARD_COLUMN, _fields.GROUP_COLUMN
prompt_key, text_prompt_key = _fields.prompt_key, _fields.text_prompt_key

#: The row fields besides the messages that make a prompt: rows that differ there are different
#: prompts (one rule for every host's group fallback).
PROMPT_FIELDS = ("tools", "images", "videos", "audios")


def row_prompt_key(messages: Sequence[Any], fields: Any = None, *, where: str) -> str:
    """The group key of a row without a group id: its prompt (:func:`prompt_key`) and its :data:`PROMPT_FIELDS`.

    ``fields`` maps field names to the row's values (a missing, None or empty field is left out),
    so a row's key is the same in every host. ``ValueError`` naming ``where`` when the row has no
    assistant message.
    """
    extra = {name: fields[name] for name in PROMPT_FIELDS if fields and fields.get(name)}
    try:
        return prompt_key(messages, extra or None)
    except ValueError as exc:
        raise ValueError(f"{exc} in {where}") from None


def text_row_prompt_key(prompt: str, fields: Any = None) -> str:
    """:func:`row_prompt_key` of a prompt/response row: its prompt as the user turn of a chat row."""
    extra = {name: fields[name] for name in PROMPT_FIELDS if fields and fields.get(name)}
    return text_prompt_key(prompt, extra or None)


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


def one_of(name: str, value: Any, allowed: Iterable[str]) -> str:
    """``value`` if it is one of ``allowed``; else ``ValueError`` listing them, with "did you mean" for a near miss.

    The one wording of every host for a misspelt option (``rift_loss: rifft``, ``loss_type="rift_gauss"``).
    """
    import difflib

    allowed = tuple(allowed)
    if isinstance(value, str) and value in allowed:
        return value
    listing = ", ".join(repr(a) for a in allowed)
    close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.75) if isinstance(value, str) else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{name} must be one of {listing}, got {value!r}{hint}")


def read_reward(value: Any, *, column: str, where: str) -> float:
    """One row's reward as a float; ``ValueError`` naming the row when it is not a finite number.

    Accepts ints and floats (and numpy scalars); refuses bools, strings, None, NaN and inf.
    ``where`` names the row, e.g. ``"row 3 of dataset 'rewards.jsonl'"``.
    """
    number = as_reward(value)
    if number is None:
        why = ""
        if isinstance(value, bool):
            why = " (a JSON number, not a bool: write 1.0, not true)"
        elif isinstance(value, str):
            why = ' (a JSON number, not a string: write 1.0, not "1.0")'
        raise ValueError(f"{column} must be a finite number in every row, got {short(value)} in {where}{why}")
    return number


def read_rewards(values: Sequence[Any], *, column: str, dataset: str) -> list[float]:
    """Validate a dataset's reward column (length N); the first bad row is named (0-based)."""
    return [read_reward(v, column=column, where=f"row {i} of dataset {dataset!r}") for i, v in enumerate(values)]


#: File name endings of the local files whose rows the adapters read raw (as JSON) before a host loads them.
JSON_EXTENSIONS = (".json", ".jsonl")


def json_rows(path: str) -> Iterator[tuple[int, int | None, Any]] | None:
    """The rows of a local JSON file as ``(row, line, value)``; None when it is not one we can read.

    A file whose first non-blank character is ``[`` is one JSON array (row i is its i-th element,
    line None); any other is JSON Lines (row i is the i-th non-blank line, ``line`` its 1-based
    number), as ``datasets``' JSON loader reads them. Yields nothing more once a line is not
    valid JSON (the host's own loader reports that); None for a file with another ending.
    """
    if not path.endswith(JSON_EXTENSIONS) or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8-sig") as f:
        head = f.read(4096).lstrip()
    if head.startswith("["):
        with open(path, encoding="utf-8-sig") as f:
            try:
                values = json.load(f)
            except ValueError:
                return iter(())
        return ((i, None, v) for i, v in enumerate(values if isinstance(values, list) else ()))
    return _json_lines(path)


def _json_lines(path: str) -> Iterator[tuple[int, int, Any]]:
    row = 0
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError:
                return
            yield row, number, value
            row += 1


def _where(row: int, line: int | None, *, dataset: str, path: str) -> str:
    where = f"row {row} of dataset {dataset!r}"
    if line is not None:
        return where + (f" (line {line})" if path == dataset else f" (file {path!r}, line {line})")
    return where if path == dataset else where + f" (file {path!r})"


def check_json_rewards(
    path: str, *, column: str, dataset: str, host: str | None = None, turns: Callable[[dict, str], bool] | None = None
) -> int | None:
    """The one reward rule of both hosts, on the raw values of a local JSON / JSON Lines file.

    Every row's ``column`` must be a JSON number (an int or a float, finite; not a string such
    as ``"1.0"``, not a bool, not null): the hosts call this before their loader runs, because
    ``datasets`` converts a string ``"1.0"`` among numbers into the number 1.0 (4.x, MS-Swift)
    or fails with "Trailing data" naming no column or row (LLaMA-Factory). Raises ``ValueError``
    naming the dataset, the column, the row (0-based, as loaded) and the value. Returns how
    many rows were checked, or None when the file cannot be read here (another format, no row
    with ``column``: the host's own checks after loading then apply).

    ``turns(record, where)``, for a host that reads per-message rewards, validates a row's
    per-message rewards (and its own reward, which is then optional) and returns True when the
    row has some; ``host`` names a host that refuses them.
    """
    rows = json_rows(path)
    if rows is None:
        return None
    checked, missing = 0, None
    for row, line, record in rows:
        if not isinstance(record, dict):
            return None
        if turns is not None and turns(record, _where(row, line, dataset=dataset, path=path)):
            checked += 1
            continue
        if host is not None:
            refuse_turn_rewards(record, column=column, host=host, where=_where(row, line, dataset=dataset, path=path))
        if column not in record:
            missing = missing or (row, line)
            continue
        read_reward(record[column], column=column, where=_where(row, line, dataset=dataset, path=path))
        checked += 1
        if missing:
            break
    if missing and checked:
        raise ValueError(
            f"{column} must be a finite number in every row, got no {column!r} key in "
            f"{_where(*missing, dataset=dataset, path=path)}"
        )
    return checked or None


def refuse_turn_rewards(record: dict, *, column: str, host: str, where: str) -> None:
    """Refuse a row whose messages carry their own ``column`` where the host would drop it silently.

    LLaMA-Factory's converters read only the tags a dataset declares: in a dataset without
    ``"reward_tag"`` a per-message reward would vanish and every assistant turn would train on
    the row's reward. ``ValueError`` naming ``where``, the row field and the message index.
    """
    for field, value in record.items():
        if not isinstance(value, list):
            continue
        for index, message in enumerate(value):
            if isinstance(message, dict) and message.get(column) is not None:
                raise ValueError(
                    f"{column} must be on the row, not on a message, for {host} with this dataset (its adapter "
                    f"reads per-message rewards only where the dataset declares them: see the host's 'Per-turn "
                    f"rewards' docs), got {column}={short(message[column])} on message {index} of {field!r} in "
                    f"{where}: move the reward to the row, or declare the per-message key"
                )


def refuse_mixed_json_feature(features, column: str, *, dataset: str, what: str, group: bool = False) -> None:
    """Refuse a reward (or group) column that ``datasets`` loaded as its ``Json`` feature.

    ``datasets`` 4.x loads a column that mixes JSON types (numbers with strings or bools) as a
    ``Json`` feature, reading a string ``"1.0"`` back as the number 1.0 (and the group ``"1"`` as
    the group 1): the file's values are lost, so the run is refused, naming the column.
    ``what`` says what asks for rewards (``"--loss_type rift"``, ``"loss_type='rift'"``).
    """
    feature = (features or {}).get(column) if hasattr(features, "get") else None
    if type(feature).__name__ != "Json":
        return
    if group:
        raise ValueError(
            f"{column} must hold one JSON type (all strings or all numbers) in dataset {dataset!r} for {what}, got a "
            'column that mixes them, which `datasets` loads turning a string "1" into the number 1 (two groups '
            "would become one)"
        )
    raise ValueError(
        f"{column} must be a JSON number in every row of dataset {dataset!r} for {what}, got a column that mixes "
        'JSON types (numbers with strings or bools), which `datasets` loads turning a string "1.0" into the '
        "number 1.0; write every reward as a number"
    )


def mixed_json_column(path: str) -> str | None:
    """Where a local JSON file's column first mixes JSON types (numbers and strings, ...), or None.

    The sentence names the column, the row and both values; ``datasets`` cannot load such a
    column (LLaMA-Factory's fails with "Trailing data at position ..."). null mixes with anything.
    """
    rows = json_rows(path)
    first: dict[str, tuple[str, Any, str]] = {}
    for row, line, record in rows or ():
        if not isinstance(record, dict):
            return None
        for key, value in record.items():
            kind = _json_type(value)
            if kind is None:
                continue
            where = f"row {row}" + (f" (line {line})" if line is not None else "")
            seen = first.setdefault(key, (kind, value, where))
            if seen[0] != kind:
                return (
                    f"column {key!r} mixes JSON types: {short(value)} (a {kind}) in {where} of {path!r}, "
                    f"{short(seen[1])} (a {seen[0]}) in {seen[2]}"
                )
    return None


def _json_type(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def read_group(value: Any, *, column: str, where: str) -> str:
    """One row's group id (a string or a number) as a hashable key; ``ValueError`` otherwise."""
    key = group_key(value)
    if key is None:
        raise ValueError(
            f"{column} must be a string or a number in every row when the column exists, got {short(value)} in {where}"
        )
    return key


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
        raise ValueError(
            f"rewards must have one value per packed sample, got {len(rewards)} rewards for {len(lengths)} samples"
        )
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


#: Why a group normalizes to 0, per normalization (paper eq. 6-8).
_ZERO_GROUPS = {
    "gaussian": "a group of one row, or whose rewards are all equal, normalizes to 0",
    "gpg_mean": "a group of one row, or whose rewards are all equal, normalizes to 0",
    "gpg_scaled": "a group without a positive reward normalizes to 0",
}


def zero_rewards_warning(
    rewards: Sequence[float],
    raw: Sequence[float],
    *,
    dataset: str,
    column: str,
    normalization: str | None,
    groups: int | None,
    hint: str,
) -> str | None:
    """The banner printed when every reward of a dataset is 0 (the run trains nothing on it), else None.

    ``rewards`` are what the loss will see (after ``normalization`` within ``groups`` groups, if
    any), ``raw`` the dataset's own. Every loss here is ``r`` times a term of the row, so a row
    with r = 0 gives loss 0 and gradient 0.
    """
    if not rewards or any(r != 0 for r in rewards):
        return None
    if normalization is None or not any(r != 0 for r in raw):
        what = f"all {len(rewards)} rows have {column} = 0"
    else:
        why = _ZERO_GROUPS.get(normalization, "every group normalizes to 0")
        what = (
            f"all {len(rewards)} rewards are 0 after {normalization} normalization within {groups} groups\n"
            f"({why}; the raw {column} values are not all 0)"
        )
    return _banner(
        f"rift-losses: dataset {dataset!r}: {what}.\n"
        f"Every row's loss and gradient are 0: this run trains NOTHING on this dataset.\n{hint}"
    )


def _banner(text: str) -> str:
    bar = "!" * 88
    return f"\n{bar}\n{text}\n{bar}"
