"""The assistant turns of a conversation and their rewards: which tokens are trained, with which reward.

Host-independent (no host import): the hosts give a ``render(messages, add_generation_prompt)``
callable that returns the chat template's token ids, and get back the row's token ids, the
assistant-token mask and one reward per token. A prompt token (system, user, tool message and
template tokens) never carries a reward.

Per-turn rewards: an assistant message may carry its own reward under the row's reward field
name; it weighs each target token of that message. An assistant message without one gets the
row's reward; a trained message with neither is an error.

Notation: M messages of a row, T tokens of the row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rift_losses._fields import as_reward, short

#: The roles whose messages are trained (and may carry a reward).
ASSISTANT_ROLES = ("assistant",)


def message_rewards(
    messages: Sequence[Any], row_reward: float | None, *, column: str, where: str
) -> list[float | None]:
    """One reward per message (length M): the message's own, else the row's; None for untrained messages.

    A message's ``column`` key that is absent or None means "no reward of its own" (``datasets``
    fills None where other messages of the column have the key). Raises ``ValueError`` naming
    ``where`` (the file and row) and the message index for: a reward on a non-assistant message,
    a reward that is not a finite JSON number (bools and strings included), an assistant message
    with no reward when the row has none.
    """
    out: list[float | None] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"messages must be a list of objects, got {short(message)} as message {index} in {where}")
        value = message.get(column)
        role = message.get("role")
        if role not in ASSISTANT_ROLES:
            if value is not None:
                raise ValueError(
                    f"{column} must be on assistant messages only, got {column}={short(value)} on message {index} "
                    f"(role {role!r}) in {where}: only the assistant's tokens are trained"
                )
            out.append(None)
            continue
        if value is None:
            if row_reward is None:
                raise ValueError(
                    f"{column} must be given for every trained assistant message (on the message or on the row), "
                    f"got neither for message {index} in {where}"
                )
            out.append(float(row_reward))
            continue
        number = as_reward(value)
        if number is None:
            why = ""
            if isinstance(value, bool):
                why = " (a JSON number, not a bool: write 1.0, not true)"
            elif isinstance(value, str):
                why = ' (a JSON number, not a string: write 1.0, not "1.0")'
            raise ValueError(
                f"{column} must be a finite JSON number on message {index} in {where}, got {short(value)}{why}"
            )
        out.append(number)
    return out


def per_row_only(option: str, *, column: str, dataset: str, fix: str) -> str:
    """The one refusal of every host for per-turn rewards under a normalized loss or the sequence level.

    ``option`` is the host's spelling of what asks for one reward per row (``loss_type='rift_gaussian'``,
    ``rift_level: 'sequence'``); ``fix`` says what to use instead, in the host's words.
    """
    return (
        f"{option} must be used with one reward per row, got per-message {column} values in dataset {dataset!r}: "
        "the normalized losses normalize one reward per row over its group and the sequence level weighs a "
        f"whole response by one reward, so per-turn rewards would be averaged away; {fix}"
    )


def has_turn_rewards(messages: Sequence[Any], *, column: str) -> bool:
    """Whether any message of the row carries its own reward (a non-None ``column`` key)."""
    return any(isinstance(m, dict) and m.get(column) is not None for m in messages or ())


def assistant_token_rewards(
    messages: Sequence[dict],
    rewards: Sequence[float | None],
    render: Callable[[list[dict], bool], list[int]],
    *,
    eos_token_id: int | None,
    where: str,
) -> tuple[list[int], list[int], list[float], list[int]]:
    """``(input_ids, assistant_mask, token_rewards, turn_index)`` of one conversation, each of length T.

    Message k's tokens are those the chat template adds for it after its generation prompt:
    ``render(messages[:k+1], False)[len(render(messages[:k], True)):]``, cut after the first
    end-of-turn token (``eos_token_id``) so the template's trailing newline is not trained (what
    TRL's ``{% generation %}`` markers, MS-Swift and LLaMA-Factory train: content + end of turn).
    ``rewards`` (from :func:`message_rewards`) says which messages are trained and with which reward;
    every token the template adds for such a message (its trailing newline included) gets its
    reward and ``turn_index`` k; every other token gets reward 0, mask 0 and ``turn_index`` -1.

    Raises ``ValueError`` naming ``where`` when the template renders a conversation's beginning
    differently from the whole conversation (the turns cannot be told apart in the tokens), or
    when a trained assistant message has no token.
    """
    full = list(render(list(messages), False))
    mask = [0] * len(full)
    token_rewards = [0.0] * len(full)
    turn = [-1] * len(full)
    for k, (message, reward) in enumerate(zip(messages, rewards)):
        if reward is None:
            continue
        before = list(render(list(messages[:k]), True))
        through = list(render(list(messages[: k + 1]), False))
        for part, name in ((before, "the conversation before it with the generation prompt"), (through, "")):
            if full[: len(part)] != part:
                what = name or f"the conversation through message {k}"
                raise ValueError(
                    f"the chat template must render the beginning of a conversation as a prefix of the whole one to "
                    f"find the tokens of each assistant message, got a different rendering of {what} (message {k}, "
                    f"role {message.get('role')!r}) in {where}; use prompt/completion rows (the prompt messages and "
                    "one assistant completion) or a template that renders earlier turns unchanged"
                )
        start, end = len(before), len(through)
        for t in range(start, end):
            token_rewards[t] = float(reward)
            turn[t] = k
        if eos_token_id is not None and eos_token_id in full[start:end]:
            end = full.index(eos_token_id, start, end) + 1
        if end <= start:
            raise ValueError(
                f"assistant message {k} must have at least one token to train, got none in {where} (an empty "
                "message, or a template that does not render it)"
            )
        for t in range(start, end):
            mask[t] = 1
    return full, mask, token_rewards, turn


def label_spans(labels: Sequence[int], *, ignore_index: int = -100) -> list[tuple[int, int]]:
    """The maximal runs ``[start, end)`` of target labels (``!= ignore_index``), in order."""
    spans: list[tuple[int, int]] = []
    start = None
    for t, label in enumerate(labels):
        if label != ignore_index and start is None:
            start = t
        elif label == ignore_index and start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, len(labels)))
    return spans


def span_token_rewards(
    labels: Sequence[int], span_rewards: Sequence[float], *, ignore_index: int = -100
) -> list[float] | None:
    """One reward per token (length T): span k of :func:`label_spans` gets ``span_rewards[k]``, other tokens 0.

    None when the labels do not hold exactly one span per reward (the caller says why).
    """
    spans = label_spans(labels, ignore_index=ignore_index)
    if len(spans) != len(span_rewards):
        return None
    out = [0.0] * len(labels)
    for (start, end), reward in zip(spans, span_rewards):
        out[start:end] = [float(reward)] * (end - start)
    return out
