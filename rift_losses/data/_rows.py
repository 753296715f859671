"""What a buffer row holds and how its fields are read: a conversation, a reward, a group.

A row is either a chat row ``{"messages": [..., {"role": "assistant", "content": RESPONSE}]}``
(the prompt is every message before the last, which must be the assistant's) or a
prompt/response row ``{"prompt": PROMPT, "response": RESPONSE}``; the field names are options.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .._fields import GROUP_COLUMN, REWARD_COLUMN, GroupIds, as_reward, group_type, prompt_key, text_prompt_key
from ._io import DataError, digest, short


@dataclass(frozen=True)
class Fields:
    """The names of the fields a command reads and writes (all configurable on the command line)."""

    messages: str = "messages"
    prompt: str = "prompt"
    response: str = "response"
    answer: str = "answer"
    reward: str = REWARD_COLUMN
    group: str = GROUP_COLUMN
    group_given: bool = False  # True: --group-field was given, every row must have it


@dataclass(frozen=True)
class Conversation:
    prompt_key: str  # canonical text of the prompt (the group key when there is no group field)
    response: str
    messages: list  # the conversation as chat messages, the response last


def conversation(row: dict, fields: Fields, path: str, line: int) -> Conversation:
    """The prompt, response and chat messages of a row; :class:`DataError` names what is wrong."""
    if fields.messages in row:
        messages = row[fields.messages]
        name = fields.messages
        if not isinstance(messages, list) or not messages:
            raise DataError(path, line, f"field {name!r} must be a non-empty list of messages, got {short(messages)}")
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise DataError(
                    path, line, f"field {name!r}[{i}] must be an object with 'role' and 'content', got {short(message)}"
                )
            for key in ("role", "content"):
                if not isinstance(message.get(key), str):
                    got = "nothing" if key not in message else short(message[key])
                    raise DataError(path, line, f"field {name!r}[{i}].{key} must be a string, got {got}")
        if messages[-1]["role"] != "assistant":
            raise DataError(
                path,
                line,
                f"field {name!r} must end with the sampled response, a message with role 'assistant', got role "
                f"{messages[-1]['role']!r}",
            )
        if len(messages) < 2:
            raise DataError(
                path,
                line,
                f"field {name!r} must hold the prompt before the assistant's response, got only the response",
            )
        return Conversation(prompt_key(messages), messages[-1]["content"], messages)
    if fields.prompt in row or fields.response in row:
        values = []
        for name in (fields.prompt, fields.response):
            if name not in row:
                raise DataError(path, line, f"missing field {name!r} (fields present: {', '.join(map(repr, row))})")
            if not isinstance(row[name], str):
                raise DataError(path, line, f"field {name!r} must be a string, got {short(row[name])}")
            values.append(row[name])
        prompt, response = values
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return Conversation(text_prompt_key(prompt), response, messages)
    raise DataError(
        path,
        line,
        f"missing field {fields.messages!r} (chat rows) or {fields.prompt!r} and {fields.response!r} "
        "(prompt/response rows); "
        f"fields present: {', '.join(map(repr, row)) or 'none'} (name yours with --messages-field or "
        "--prompt-field/--response-field)",
    )


def reward(row: dict, fields: Fields, path: str, line: int) -> float:
    """The row's reward, a finite number (bools and strings refused)."""
    name = fields.reward
    if name not in row:
        raise DataError(
            path,
            line,
            f"missing field {name!r} (label the buffer first with `rift-losses label`, or name yours with "
            "--reward-field)",
        )
    value = as_reward(row[name])
    if value is None:
        raise DataError(path, line, f"field {name!r} must be a finite number, got {short(row[name])}")
    return value


def turn_rewards(
    row: dict, conv: Conversation, fields: Fields, path: str, line: int
) -> tuple[float, list[float] | None]:
    """``(outcome, per_turn)``: the row's reward for the tables, and each assistant turn's reward.

    ``per_turn`` is None for a row whose messages carry no reward of their own (the row's reward
    then weighs every assistant turn). Otherwise it has one reward per assistant message: its own
    (the ``reward`` field on the message), else the row's; ``outcome`` is the row's reward, or
    the last assistant turn's when the row has none (an agent trajectory's final answer).
    :class:`DataError` for a reward on a non-assistant message, one that is not a finite number,
    or an assistant message with neither its own reward nor the row's.
    """
    name = fields.reward
    own: dict[int, float] = {}
    for i, message in enumerate(conv.messages):
        if not isinstance(message, dict) or message.get(name) is None:
            continue
        if message.get("role") != "assistant":
            raise DataError(
                path,
                line,
                f"field {fields.messages!r}[{i}].{name} must be on an assistant message only, got it on role "
                f"{message.get('role')!r}",
            )
        value = as_reward(message[name])
        if value is None:
            raise DataError(
                path, line, f"field {fields.messages!r}[{i}].{name} must be a finite number, got {short(message[name])}"
            )
        own[i] = value
    if not own:
        return reward(row, fields, path, line), None
    row_reward = reward(row, fields, path, line) if name in row else None
    per_turn = []
    for i, message in enumerate(conv.messages):
        if message.get("role") != "assistant":
            continue
        if i not in own and row_reward is None:
            raise DataError(
                path,
                line,
                f"field {fields.messages!r}[{i}] (an assistant message) must carry {name!r}, or the row must, got "
                "neither",
            )
        per_turn.append(own.get(i, row_reward))
    return (row_reward if row_reward is not None else per_turn[-1]), per_turn


def answer(row: dict, fields: Fields, path: str, line: int) -> str:
    """The reference answer as text (JSON numbers are accepted and written as they read)."""
    name = fields.answer
    if name not in row:
        raise DataError(path, line, f"missing field {name!r}: the reference answer (name yours with --answer-field)")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(path, line, f"field {name!r} must be a string or a number, got {short(value)}")
    text = value if isinstance(value, str) else json.dumps(value)
    if not text.strip():
        raise DataError(path, line, f"field {name!r} must not be empty")
    return text


class Grouper:
    """The group of each row: its group field when the rows have one, else its prompt.

    The choice is made on the first row: if it has the group field (or ``--group-field`` was
    given), every row must have it; if not, every row is grouped by its prompt, and a later
    row that does carry the field is an error rather than being ignored.
    """

    def __init__(self, fields: Fields, path: str):
        self.fields, self.path = fields, path
        self.by_field: bool | None = True if fields.group_given else None
        self.ids = GroupIds(f"field {fields.group!r}")

    def key(self, row: dict, conv: Conversation, line: int) -> tuple[int, str]:
        """``(64-bit digest, description)`` of the row's group."""
        name = self.fields.group
        if self.by_field is None:
            self.by_field = name in row
        if self.by_field:
            if name not in row:
                raise DataError(
                    self.path,
                    line,
                    f"missing field {name!r}: the rows before have it, and it names each response's group",
                )
            value = row[name]
            if group_type(value) is None:
                raise DataError(self.path, line, f"field {name!r} must be a string or a number, got {short(value)}")
            try:
                key = self.ids.key(value, where=f"line {line}")
            except ValueError as exc:
                raise DataError(self.path, line, str(exc)) from None
            return digest("g" + key), f"{name} {short(value)}"
        if name in row:
            raise DataError(
                self.path,
                line,
                f"field {name!r} appears here but not on the first row; give it on every row, or on none to group "
                "by the prompt",
            )
        return digest(
            "p" + conv.prompt_key
        ), f"prompt {short(conv.messages[-2]['content'] if len(conv.messages) > 1 else conv.prompt_key, 40)}"

    @property
    def what(self) -> str:
        return f"field {self.fields.group!r}" if self.by_field else "the prompt"
