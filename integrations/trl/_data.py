"""Rewards of a TRL dataset: validated per row, normalized over whole groups, carried per batch.

Host-specific only in what a TRL row looks like (``messages``, ``prompt``/``completion``,
``text``); the reading, grouping and normalization are ``integrations/_common.py``'s.

Notation: N rows of a dataset, B samples of a batch, L tokens of a padding-free row.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import torch

from .._common import (
    PROMPT_FIELDS,
    normalize_dataset_rewards,
    per_token_rewards,
    read_group,
    read_reward,
    read_rewards,
    refuse_mixed_json_feature,
    row_prompt_key,
    text_row_prompt_key,
    zero_rewards_warning,
)
from .._core.turns import assistant_token_rewards, has_turn_rewards, message_rewards, per_row_only

#: The batch key that carries the rewards from the collator to ``compute_loss`` (float32,
#: ``(B,)``, or ``(1, L)`` one per token for a padding-free batch).
REWARDS_KEY = "rift_rewards"

#: The column that carries one reward per token of a ``messages`` row the adapter tokenized
#: (:func:`tokenize_conversations`), aligned with ``input_ids`` (0 off the assistant turns).
TOKEN_REWARDS_COLUMN = "rift_token_rewards"


def prepare_rewards(
    dataset, *, column: str, group_column: str, method: str | None, name: str, loss_type: str, level: str = "token"
):
    """Check every row's reward before training; with ``method``, normalize over whole groups.

    ``dataset`` is a ``datasets.Dataset`` (every row is read now) or an ``IterableDataset``
    (each row is checked by :class:`RiftCollator` when it is batched; normalization, which
    needs every row of a group, is refused). Returns the dataset, with the normalized rewards
    in ``column`` when ``method`` is given.

    Raises:
        ValueError: missing column; a non-finite or non-numeric reward (bools and strings
            included), naming the column and the row; a bad group id; an iterable dataset
            with a normalized loss.
    """
    from datasets import IterableDataset

    dataset = _as_messages(dataset)
    if isinstance(dataset, IterableDataset):
        if method is not None:
            raise ValueError(
                f"loss_type={loss_type!r} needs a map-style dataset (it normalizes rewards over whole groups), got an "
                f"IterableDataset for the {name} dataset; use loss_type='rift' or load the dataset without streaming"
            )
        return dataset
    columns = list(dataset.column_names)
    what = f"loss_type={loss_type!r}"
    turns = check_turn_rewards(dataset, column=column, name=name, loss_type=loss_type, method=method, level=level)
    if column not in columns and turns:
        _warn_all_zero(turns, column=column, name=name, method=None)
        return dataset
    if column not in columns:
        raise ValueError(
            f"reward_column {column!r} must be a column of the {name} dataset for loss_type={loss_type!r} (one reward "
            f"per row), got columns {columns}"
        )
    features = getattr(dataset, "features", None)
    refuse_mixed_json_feature(features, column, dataset=name, what=what)
    rewards = read_rewards(dataset[column], column=column, dataset=name)
    if method is None:
        _warn_all_zero(turns or rewards, column=column, name=name, method=None)
        return dataset
    keys = group_keys(dataset, group_column=group_column, name=name, loss_type=loss_type)
    normalized = normalize_dataset_rewards(rewards, keys, method=method)
    _warn_all_zero(normalized, column=column, name=name, method=method, raw=rewards, groups=len(set(keys)))
    return dataset.remove_columns(column).add_column(column, normalized)


def _as_messages(dataset):
    """A ``conversations`` (``from``/``value``) dataset as TRL's ChatML ``messages`` (what TRL converts it to).

    Converted here, before the adapter tokenizes ``messages`` rows itself, so those rows also
    train their assistant turns only; other keys of a message (its ``reward``) are kept.
    """
    columns = _column_names(dataset)
    if columns is None or "conversations" not in columns or "messages" in columns:
        return dataset
    from trl.data_utils import maybe_convert_to_chatml

    return dataset.map(maybe_convert_to_chatml, remove_columns=["conversations"])


def _warn_all_zero(rewards, *, column: str, name: str, method: str | None, raw=None, groups=None) -> None:
    banner = zero_rewards_warning(
        list(rewards),
        list(raw if raw is not None else rewards),
        dataset=name,
        column=column,
        normalization=method,
        groups=groups,
        hint="Check the reward column (and the normalization): a RIFT loss learns only from rewards != 0.",
    )
    if banner:
        warnings.warn(banner, stacklevel=3)


def check_turn_rewards(
    dataset, *, column: str, name: str, loss_type: str, method: str | None, level: str
) -> list[float] | None:
    """The rewards of every trained assistant message of a ``messages`` dataset, checked; None without per-turn rewards.

    Only when some message carries its own ``column``; then every assistant message must have a
    reward (its own or the row's). Normalized losses and ``level="sequence"`` are refused with
    per-turn rewards (one reward per row is what they normalize or weigh). A per-message reward in
    a prompt/completion row is refused (it would be ignored).
    """
    columns = list(dataset.column_names)
    for field in ("prompt", "completion"):
        if field in columns and any(isinstance(v, list) and has_turn_rewards(v, column=column) for v in dataset[field]):
            raise ValueError(
                f"{column} must be on the row, not on the messages, of a prompt/completion dataset ({name!r}, column "
                f"{field!r}), got a per-message {column}: write the conversation as a 'messages' row to give each "
                "assistant turn its own reward"
            )
    if "messages" not in columns:
        return None
    conversations = dataset["messages"]
    if not any(has_turn_rewards(m, column=column) for m in conversations):
        return None
    if method is not None or level != "token":
        option = f"loss_type={loss_type!r}" if method is not None else f"rift_level={level!r}"
        raise ValueError(
            per_row_only(
                option,
                column=column,
                dataset=name,
                instead="use loss_type='rift' (or 'rift_naive') at rift_level='token'",
            )
        )
    row_rewards = dataset[column] if column in columns else [None] * len(conversations)
    out: list[float] = []
    for i, (messages, row_reward) in enumerate(zip(conversations, row_rewards)):
        where = f"row {i} of dataset {name!r}"
        if row_reward is not None:
            row_reward = read_reward(row_reward, column=column, where=where)
        out.extend(r for r in message_rewards(messages, row_reward, column=column, where=where) if r is not None)
    return out


def tokenize_conversations(
    dataset, processing_class, *, column: str, name: str, chat_template, assistant_only_loss: bool, tokenize
):
    """``messages`` rows -> ``input_ids``, ``assistant_masks`` (and :data:`TOKEN_REWARDS_COLUMN`).

    The adapter tokenizes a conversational language-modeling dataset itself, so that a RIFT loss
    trains only the assistant turns whether or not the chat template has ``{% generation %}``
    markers, and each turn's tokens get that turn's reward (:mod:`integrations._core.turns`);
    the per-token rewards column is written only when some message carries its own reward (else
    the row's, possibly normalized, reward travels as one per sample). With
    ``assistant_only_loss`` the template's own assistant mask decides which tokens are trained;
    each gets the reward of the assistant message it belongs to. TRL then builds the labels from
    ``assistant_masks`` (its "already tokenized" path). ``tokenize`` is TRL's ``_tokenize``.
    Other datasets are returned unchanged.
    """
    columns = _column_names(dataset)
    if columns is None or "messages" not in columns or "input_ids" in columns:
        return dataset
    # One reward per token only where a message carries its own: otherwise the row's (possibly
    # normalized) reward travels as one per sample, as for every other row format.
    per_turn = _is_iterable(dataset) or any(has_turn_rewards(m, column=column) for m in dataset["messages"])
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    eos = getattr(tokenizer, "eos_token_id", None)

    def row(example, idx):
        where = f"row {idx} of dataset {name!r}"
        tools = example.get("tools")
        tools = json.loads(tools) if isinstance(tools, str) else tools
        kwargs = {"chat_template": chat_template, "tools": tools, **(example.get("chat_template_kwargs") or {})}

        def render(messages, generation_prompt):
            return tokenize(processing_class, messages, add_generation_prompt=generation_prompt, **kwargs)["input_ids"]

        row_reward = example.get(column)
        if row_reward is not None:
            row_reward = read_reward(row_reward, column=column, where=where)
        messages = example["messages"]
        rewards = message_rewards(messages, row_reward, column=column, where=where)
        ids, mask, token_rewards, turn = assistant_token_rewards(
            messages, rewards, render, eos_token_id=eos, where=where
        )
        if assistant_only_loss:
            template = tokenize(processing_class, messages, return_assistant_tokens_mask=True, **kwargs)
            if list(template["input_ids"]) != ids:
                raise ValueError(
                    f"the chat template must give the same tokens with and without its assistant mask, got two "
                    f"tokenizations of {where}"
                )
            mask = list(template["assistant_masks"])
            stray = [t for t, m in enumerate(mask) if m and turn[t] < 0]
            if stray:
                raise ValueError(
                    f"the chat template's assistant mask must cover the assistant messages only, got "
                    f"{len(stray)} masked tokens outside them in {where} (a prompt token never carries a reward)"
                )
        if 1 not in mask:
            raise ValueError(f"messages must hold at least one assistant message to train, got none in {where}")
        out = {"input_ids": ids, "assistant_masks": mask}
        if per_turn:
            out[TOKEN_REWARDS_COLUMN] = token_rewards
        return out

    kwargs = {"with_indices": True, "remove_columns": ["messages"]}
    if hasattr(dataset, "column_names") and not _is_iterable(dataset):
        kwargs["desc"] = f"Tokenizing {name} dataset (assistant turns and their rewards)"
    return dataset.map(row, **kwargs)


def _column_names(dataset) -> list[str] | None:
    names = getattr(dataset, "column_names", None)
    if names is None and _is_iterable(dataset):
        first = next(iter(dataset), None)
        names = list(first) if isinstance(first, dict) else None
    return list(names) if names is not None else None


def _is_iterable(dataset) -> bool:
    from datasets import IterableDataset

    return isinstance(dataset, IterableDataset)


def group_keys(dataset, *, group_column: str, name: str, loss_type: str) -> list[str]:
    """One group key per row: the ``group_column`` value, else the row's prompt."""
    columns = list(dataset.column_names)
    if group_column in columns:
        refuse_mixed_json_feature(
            getattr(dataset, "features", None), group_column, dataset=name, what=f"loss_type={loss_type!r}", group=True
        )
        return [
            read_group(v, column=group_column, where=f"row {i} of dataset {name!r}")
            for i, v in enumerate(dataset[group_column])
        ]
    fields = {c: dataset[c] for c in PROMPT_FIELDS if c in columns}  # the same prompt key as every host

    def row_fields(i: int) -> dict:
        return {c: values[i] for c, values in fields.items()}

    if "messages" in columns:
        return [
            row_prompt_key(m, row_fields(i), where=f"row {i} of dataset {name!r}")
            for i, m in enumerate(dataset["messages"])
        ]
    if "prompt" in columns:
        completions = dataset["completion"] if "completion" in columns else [None] * len(dataset)
        return [
            _prompt_row_key(p, c, row_fields(i), where=f"row {i} of dataset {name!r}")
            for i, (p, c) in enumerate(zip(dataset["prompt"], completions))
        ]
    raise ValueError(
        f"group_column {group_column!r} must be a column of the {name} dataset for loss_type={loss_type!r} when "
        "its rows "
        f"have no prompt ('messages' or 'prompt') to group by, got columns {columns}"
    )


def _prompt_row_key(prompt: Any, completion: Any, fields: dict, *, where: str) -> str:
    if isinstance(prompt, list):  # conversational prompt/completion: the same key as a messages row
        messages = list(prompt) + list(completion or [{"role": "assistant", "content": ""}])
        return row_prompt_key(messages, fields, where=where)
    return text_row_prompt_key(prompt, fields)  # a text prompt: the key of the same user turn


class RiftCollator:
    """Wraps the trainer's collator: takes the rewards out of the examples, adds them to the batch.

    The inner collator (TRL's ``DataCollatorForLanguageModeling`` or the user's) never sees
    the reward and group columns. The batch gets :data:`REWARDS_KEY`: float32 ``(B,)`` one per
    sample; ``(B, T)`` one per token, aligned with the unshifted ``input_ids`` (0 on padding),
    when the examples carry :data:`TOKEN_REWARDS_COLUMN` (tokenized ``messages`` rows: each
    assistant turn's reward on its tokens); for a padding-free batch (one row of concatenated
    samples), ``(1, L)`` with each sample's rewards on its tokens, so the rewards follow their tokens.
    ``truncation_mode`` says which end of a token-reward list TRL's ``max_length`` kept.
    """

    def __init__(self, inner, *, column: str, group_column: str, padding_free: bool, truncation_mode="keep_start"):
        self.inner = inner
        self.column = column
        self.group_column = group_column
        self.padding_free = padding_free
        self.truncation_mode = truncation_mode

    def __call__(self, examples: list[dict]) -> dict:
        rewards, stripped = [], []
        drop = (self.column, self.group_column, TOKEN_REWARDS_COLUMN)
        for i, example in enumerate(examples):
            if TOKEN_REWARDS_COLUMN in example:
                rewards.append(self._token_rewards(example))
            elif self.column not in example:
                raise ValueError(
                    f"reward_column {self.column!r} must be in every example, got keys {sorted(example)} in "
                    f"example {i} "
                    "of a batch (the dataset lost its reward column on the way to the collator)"
                )
            else:
                rewards.append(read_reward(example[self.column], column=self.column, where=f"example {i} of a batch"))
            stripped.append({k: v for k, v in example.items() if k not in drop})
        batch = self.inner(stripped)
        labels = batch["labels"]
        lengths = [len(example["input_ids"]) for example in stripped]
        per_token = any(isinstance(r, list) for r in rewards)
        if per_token:  # every sample as a per-token list (a row reward on each of its tokens)
            rewards = [r if isinstance(r, list) else [r] * n for r, n in zip(rewards, lengths)]
        if self.padding_free:
            token_rewards = torch.zeros(labels.shape, dtype=torch.float32)
            flat = [x for r in rewards for x in r] if per_token else per_token_rewards(rewards, lengths)
            if labels.shape[0] != 1 or len(flat) > labels.shape[1]:
                raise ValueError(
                    f"a padding-free batch must be one row holding every sample's tokens, got labels of shape "
                    f"{tuple(labels.shape)} for samples of lengths {lengths}; the rewards cannot follow their tokens"
                )
            token_rewards[0, : len(flat)] = torch.tensor(flat, dtype=torch.float32)
            batch[REWARDS_KEY] = token_rewards
            return batch
        if labels.shape[0] != len(examples):
            raise ValueError(
                f"the collator must return one labels row per example, got {labels.shape[0]} rows for "
                f"{len(examples)} examples; the rewards cannot follow their samples"
            )
        if per_token:
            token_rewards = torch.zeros(labels.shape, dtype=torch.float32)
            for b, r in enumerate(rewards):  # TRL pads on the right
                token_rewards[b, : len(r)] = torch.tensor(r, dtype=torch.float32)
            batch[REWARDS_KEY] = token_rewards
        else:
            batch[REWARDS_KEY] = torch.tensor(rewards, dtype=torch.float32)
        return batch

    def _token_rewards(self, example: dict) -> list[float]:
        """The example's per-token rewards, cut as TRL's ``max_length`` cut its ``input_ids``."""
        values = [float(x) for x in example[TOKEN_REWARDS_COLUMN]]
        n = len(example["input_ids"])
        if len(values) == n:
            return values
        return values[-n:] if self.truncation_mode == "keep_end" else values[:n]
