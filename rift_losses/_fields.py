"""What a buffer row holds, read one way by the ``rift-losses`` command and by every adapter.

Pure Python (no torch, no host): the default column names, the reward rule, the group key and
the prompt key that puts the responses of one problem in one group. ``rift_losses.data`` (the
``rift-losses`` command) and ``integrations/_common.py`` (MS-Swift, LLaMA-Factory, TRL) import
them from here, so ``rift-losses normalize``/``convert`` and ``--loss_type rift_gaussian`` put
the same rows in the same groups (tests/data/test_grouping_agreement.py drives both).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

#: The default dataset column names (``rift-losses convert`` writes them, the adapters read them).
REWARD_COLUMN = "reward"
GROUP_COLUMN = "group"


def short(value: Any, limit: int = 60, *, as_json: bool = False) -> str:
    """``value`` as text for an error message, cut to ``limit`` characters.

    ``repr(value)`` (a loaded value: ``None``, ``True``), or with ``as_json`` the value as it is
    written in a JSON file (``null``, ``true``, ``Infinity``; strings still quoted ``'1.0'``).
    """
    if as_json and not isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False, default=repr)
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_reward(value: Any) -> float | None:
    """The reward rule: ``value`` as a float when it is a finite number, else None.

    A reward is a JSON number: an int or a float (numpy / torch scalars too), finite. Bools,
    strings (``"1.0"``), None, NaN and infinities are not rewards.
    """
    number = value
    if hasattr(value, "item") and not isinstance(value, (int, float)) and getattr(value, "ndim", 1) == 0:
        number = value.item()  # numpy / torch scalar
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        return None
    return float(number)


def group_key(value: Any) -> str | None:
    """A row's group id (a string or a finite number) as a hashable key, else None.

    The hosts' rule (``datasets`` loads a column of ints and floats as floats): a number is
    compared by its value, so ``1``, ``1.0`` and ``1e0`` are one group (key ``"1"``); a string by
    its text, so the group ``1`` and the group ``"1"`` stay apart (a column may not mix them:
    :class:`GroupIds`). Bools, None, NaN and infinities are not group ids.
    """
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    number = canonical_group(value)
    return None if number is None else json.dumps(number)


def canonical_group(value: Any) -> int | float | str | None:
    """A group id as it is written for the hosts: a string as is, an integral number as an int (``1.0`` -> 1).

    None for what is not a group id (see :func:`group_key`).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return int(value) if value.is_integer() else value
    return int(value)


def group_type(value: Any) -> str | None:
    """``"string"`` or ``"number"`` for a group id (see :func:`group_key`), else None."""
    if isinstance(value, str):
        return "string"
    return "number" if canonical_group(value) is not None else None


class GroupIds:
    """The group keys of one dataset's rows, in order, with the hosts' rule checked on every row.

    One rule for the ``rift-losses`` command and every host adapter: :func:`group_key` of each
    id, and one JSON type per column, since ``datasets`` cannot load a column that mixes
    numbers and strings as they are (it fails, or reads ``"1"`` as the number 1). Usage::

        ids = GroupIds("group")
        keys = [ids.key(value, where=f"row {i}") for i, value in enumerate(values)]

    ``key`` raises ``ValueError`` naming the column, the row (``where``) and the value for an id
    that is not a string or a finite number, or whose type differs from the first row's.
    """

    def __init__(self, column: str):
        self.column = column
        self.first: tuple[str, Any, str] | None = None  # (type, value, where) of the first id

    def key(self, value: Any, *, where: str) -> str:
        kind = group_type(value)
        if kind is None:
            raise ValueError(f"{self.column} must be a string or a finite number, got {short(value)} in {where}")
        if self.first is None:
            self.first = (kind, value, where)
        elif kind != self.first[0]:
            first_kind, first_value, first_where = self.first
            raise ValueError(
                f"{self.column} must hold one JSON type in every row (all strings or all numbers: the hosts' "
                f'dataset loader refuses a mix, or reads "1" as 1), got {short(value)} (a {kind}) in {where} and '
                f"{short(first_value)} (a {first_kind}) in {first_where}"
            )
        return group_key(value)  # type: ignore[return-value] (checked above)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    return repr(value)


def prompt_key(messages: Sequence[dict], extra: Any = None) -> str:
    """The prompt of a chat row as canonical text: every message before the last assistant turn.

    ``json.dumps(messages[:k], ensure_ascii=False, sort_keys=True)`` where k is the index of the
    last ``"assistant"`` message; message keys whose value is None are left out (a loader that
    unifies message fields adds them as None). ``extra`` (e.g. the row's tools or media) is
    appended when given, so rows that differ only there are different prompts. Raises
    ``ValueError`` when there is no assistant message.
    """
    last = max(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"), default=None
    )
    if last is None:
        roles = [m.get("role") for m in messages if isinstance(m, dict)]
        raise ValueError(f"messages must hold an assistant turn (the response), got roles {roles}")
    prompt = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in messages[:last]]
    key = json.dumps(prompt, ensure_ascii=False, sort_keys=True, default=_json_default)
    if extra:
        key += "\x00" + json.dumps(extra, ensure_ascii=False, sort_keys=True, default=_json_default)
    return key


def text_prompt_key(prompt: str, extra: Any = None) -> str:
    """The key of a prompt/response row: its prompt as the user turn of a chat row (:func:`prompt_key`).

    ``rift-losses convert`` writes such a row as ``[user: prompt, assistant: response]`` and the
    hosts read it so, so a prompt/response row and a chat row with the same user turn (and no
    system prompt) are one problem.
    """
    return prompt_key([{"role": "user", "content": prompt}, {"role": "assistant", "content": ""}], extra)
