"""Per-turn rewards in MS-Swift rows: read from the raw messages, put on the tokens at ``Template.encode``.

MS-Swift's preprocessing drops every message key but ``role``, ``content``, ``loss`` and
``loss_scale``, so the adapter reads each assistant message's reward from the raw row (the
rules are :func:`integrations._core.turns.message_rewards`'), carries them in the private column
:data:`TURNS_KEY` (``{"where": "row i of dataset ...", "rewards": [one per trained assistant message]}``)
and turns them into one reward per token once MS-Swift has encoded the row:

- MS-Swift trains one contiguous run of labels per trained *turn*: a maximal run of
  ``assistant``/``tool_call`` messages (it merges consecutive ones into one response). A turn
  is trained unless every message of it has ``loss: false`` or ``loss_scale <= 0``.
- The k-th run of labels (:func:`integrations._core.turns.label_spans`) gets the k-th trained
  turn's reward. When the counts differ (a ``--loss_scale`` such as ``last_round`` or one that
  zeroes parts of a response, truncation, an empty message, ...) the row is refused with the
  reason: no token is given a reward that is not its own.

Host-independent (no MS-Swift import). Notation: M messages of a row, T tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._core.turns import has_turn_rewards, message_rewards, span_token_rewards

#: The private row column with the rewards of a row's assistant messages (None for a row without per-turn rewards).
TURNS_KEY = "_rift_turns"
#: The encoded-sample key with one reward per token (aligned with ``input_ids``) of a per-turn row.
TOKENS_KEY = "_rift_token_rewards"
#: The encoded-sample key with the reason a per-turn row's tokens could not be given their rewards.
#: (MS-Swift drops a row whose encoding raises, so the reason travels to the collator and the pre-flight check.)
ERROR_KEY = "_rift_turn_error"

#: The raw columns MS-Swift's ``MessagesPreprocessor`` reads as messages.
MESSAGE_FIELDS = ("messages", "conversations", "conversation")
#: MS-Swift's role aliases (``MessagesPreprocessor``): raw role -> standard role.
_ROLES = {
    "human": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "function_call": "tool_call",
    "function-call": "tool_call",
    "function_response": "tool",
    "function-response": "tool",
    "tool_response": "tool",
    "observation": "tool",
    "observations": "tool",
}
#: The standard roles MS-Swift trains (``tool_call`` messages become assistant responses).
_TRAINED_ROLES = ("assistant", "tool_call")


def _role(message: dict) -> Any:
    role = message.get("role", message.get("from"))
    return _ROLES.get(role, role) if isinstance(role, str) else role


def _untrained(message: dict) -> bool:
    """MS-Swift's per-message ``loss: false`` or ``loss_scale <= 0``: the message has no target token."""
    loss, scale = message.get("loss"), message.get("loss_scale")
    return (loss is not None and not loss) or (isinstance(scale, (int, float)) and scale <= 0)


def message_field(record: Any, renames: Any = None) -> str | None:
    """The raw row's messages column (``messages``, ``conversations``, ``conversation``, or one that
    ``renames`` (MS-Swift's ``--columns``, old name -> new name) renames to ``messages``), or None."""
    renamed = [old for old, new in renames.items() if new == "messages"] if isinstance(renames, dict) else []
    for field in (*renamed, *MESSAGE_FIELDS):
        if field in record:
            return field
    return None


def raw_turn_rewards(messages: Any, row_reward: float | None, *, column: str, where: str) -> list[float] | None:
    """The rewards of a raw row's trained assistant messages in order (own, else the row's); None without any own.

    Validates with :func:`message_rewards` on MS-Swift's standard roles. ``ValueError`` naming
    ``where`` and the message index for a bad reward, one on a non-assistant message (a
    ``tool_call`` message included), one on a message with ``loss: false``, and an assistant
    message with no reward when the row has none.
    """
    if not isinstance(messages, list) or not has_turn_rewards(messages, column=column):
        return None
    view = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"messages must be a list of objects, got {message!r} as message {index} in {where}")
        role = _role(message)
        if role == "assistant" and _untrained(message):
            if message.get(column) is not None:
                raise ValueError(
                    f"{column} must not be given on an untrained message, got {column}={message[column]!r} on message "
                    f"{index} (loss: false or loss_scale <= 0) in {where}: drop one of the two"
                )
            role = "assistant, untrained"
        view.append({"role": role, column: message.get(column)})
    rewards = message_rewards(view, row_reward, column=column, where=where)
    return [r for r, m in zip(rewards, view) if m["role"] == "assistant" and r is not None]


def _turns(messages: Sequence[dict], rewards: Sequence[float], row_reward: float | None, where: str) -> list[float]:
    """One reward per trained turn (see the module doc); ``ValueError`` when it cannot be told."""
    turns: list[tuple[bool, list[float], int]] = []  # (trained, rewards of its trained assistant messages, first index)
    k, previous = 0, False
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in _TRAINED_ROLES:
            previous = False
            continue
        if not previous:
            turns.append((False, [], index))
        trained, own, first = turns[-1]
        if role == "assistant" and not _untrained(message):
            if k >= len(rewards):
                break
            own = [*own, rewards[k]]
            k += 1
        turns[-1] = (trained or not _untrained(message), own, first)
        previous = True
    assistants = sum(m.get("role") == "assistant" and not _untrained(m) for m in messages)
    if assistants != len(rewards):
        raise ValueError(
            f"the per-turn rewards of {where} must follow its trained assistant messages through MS-Swift's "
            f"preprocessing, got {len(rewards)} rewards for {assistants} such messages after it (a format MS-Swift "
            "converts, such as OpenAI tool_calls or Anthropic blocks, changes the messages); write the row as plain "
            "messages"
        )
    out = []
    for trained, own, first in turns:
        if not trained:
            continue
        values = sorted(set(own))
        if len(values) > 1:
            raise ValueError(
                f"consecutive assistant/tool_call messages must have one reward, got {values} for the turn starting at "
                f"message {first} in {where}: MS-Swift merges them into one response"
            )
        if not values and row_reward is None:
            raise ValueError(
                f"the tool_call turn starting at message {first} in {where} must have a reward, got none: give the row "
                "a reward, or the assistant message next to it its own"
            )
        out.append(values[0] if values else float(row_reward))
    return out


def encoded_token_rewards(
    labels: Sequence[int], messages: Sequence[dict], turns: dict, row_reward: float | None
) -> tuple[list[float] | None, str | None]:
    """``(rewards, None)``: one reward per token of an encoded per-turn row (0 off the targets); or ``(None, why)``.

    ``messages`` are the row's messages after MS-Swift's preprocessing, ``turns`` its
    :data:`TURNS_KEY` value, ``labels`` MS-Swift's labels of the row (-100 off the targets).
    """
    where = turns.get("where") or "a row"
    try:
        rewards = _turns(messages, list(turns.get("rewards") or ()), row_reward, where)
    except ValueError as exc:
        return None, str(exc)
    tokens = span_token_rewards(labels, rewards)
    if tokens is not None:
        return tokens, None
    spans = sum(1 for a, b in zip([-100, *labels], labels) if a == -100 and b != -100)
    last = next((m for m in reversed(messages) if m.get("role") in _TRAINED_ROLES), None)
    quirk = (
        "; here the last assistant message has loss: false, yet MS-Swift still trains its end-of-turn tokens: "
        "drop that message from the row instead"
        if last is not None and _untrained(last) and spans == len(rewards) + 1
        else ""
    )
    return None, (
        f"the per-turn rewards of {where} must meet one run of trained tokens per trained assistant turn, got "
        f"{spans} runs for {len(rewards)} trained turns (MS-Swift trains one run per assistant turn unless "
        "--loss_scale trains only some turns or parts of one, such as last_round or an agent loss scale, "
        f"--max_length truncated the row, or a message is empty){quirk}"
    )
