"""Rewards of a TRL dataset: validated per row, normalized over whole groups, carried per batch.

Host-specific only in what a TRL row looks like (``messages``, ``prompt``/``completion``,
``text``); the reading, grouping and normalization are ``integrations/_common.py``'s.

Notation: N rows of a dataset, B samples of a batch, L tokens of a padding-free row.
"""

from __future__ import annotations

from typing import Any

import torch

from .._common import (
    normalize_dataset_rewards,
    per_token_rewards,
    prompt_key,
    read_group,
    read_reward,
    read_rewards,
    refuse_mixed_json_feature,
    text_prompt_key,
)

#: The batch key that carries the rewards from the collator to ``compute_loss`` (float32,
#: ``(B,)``, or ``(1, L)`` one per token for a padding-free batch).
REWARDS_KEY = "rift_rewards"


def prepare_rewards(dataset, *, column: str, group_column: str, method: str | None, name: str, loss_type: str):
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

    if isinstance(dataset, IterableDataset):
        if method is not None:
            raise ValueError(
                f"loss_type={loss_type!r} needs a map-style dataset (it normalizes rewards over whole groups), got an "
                f"IterableDataset for the {name} dataset; use loss_type='rift' or load the dataset without streaming"
            )
        return dataset
    columns = list(dataset.column_names)
    if column not in columns:
        raise ValueError(
            f"reward_column {column!r} must be a column of the {name} dataset for loss_type={loss_type!r} (one reward "
            f"per row), got columns {columns}"
        )
    what = f"loss_type={loss_type!r}"
    features = getattr(dataset, "features", None)
    refuse_mixed_json_feature(features, column, dataset=name, what=what)
    rewards = read_rewards(dataset[column], column=column, dataset=name)
    if method is None:
        return dataset
    keys = group_keys(dataset, group_column=group_column, name=name, loss_type=loss_type)
    normalized = normalize_dataset_rewards(rewards, keys, method=method)
    return dataset.remove_columns(column).add_column(column, normalized)


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
    if "messages" in columns:
        tools = dataset["tools"] if "tools" in columns else [None] * len(dataset)
        return [prompt_key(m, extra=t) for m, t in zip(dataset["messages"], tools)]
    if "prompt" in columns:
        completions = dataset["completion"] if "completion" in columns else [None] * len(dataset)
        tools = dataset["tools"] if "tools" in columns else [None] * len(dataset)
        return [_prompt_row_key(p, c, t) for p, c, t in zip(dataset["prompt"], completions, tools)]
    raise ValueError(
        f"group_column {group_column!r} must be a column of the {name} dataset for loss_type={loss_type!r} when "
        "its rows "
        f"have no prompt ('messages' or 'prompt') to group by, got columns {columns}"
    )


def _prompt_row_key(prompt: Any, completion: Any, tools: Any) -> str:
    if isinstance(prompt, list):  # conversational prompt/completion: the same key as a messages row
        return prompt_key(list(prompt) + list(completion or [{"role": "assistant", "content": ""}]), extra=tools)
    return text_prompt_key(prompt, extra=tools)  # a text prompt: the key of the same user turn


class RiftCollator:
    """Wraps the trainer's collator: takes the rewards out of the examples, adds them to the batch.

    The inner collator (TRL's ``DataCollatorForLanguageModeling`` or the user's) never sees
    the reward and group columns. The batch gets :data:`REWARDS_KEY`: float32 ``(B,)``; for
    a padding-free batch (one row of concatenated samples), float32 ``(1, L)`` with each
    sample's reward on each of its tokens (0 on padding), so the rewards follow their tokens.
    """

    def __init__(self, inner, *, column: str, group_column: str, padding_free: bool):
        self.inner = inner
        self.column = column
        self.group_column = group_column
        self.padding_free = padding_free

    def __call__(self, examples: list[dict]) -> dict:
        rewards, stripped = [], []
        for i, example in enumerate(examples):
            if self.column not in example:
                raise ValueError(
                    f"reward_column {self.column!r} must be in every example, got keys {sorted(example)} in "
                    f"example {i} "
                    "of a batch (the dataset lost its reward column on the way to the collator)"
                )
            rewards.append(read_reward(example[self.column], column=self.column, where=f"example {i} of a batch"))
            stripped.append({k: v for k, v in example.items() if k not in (self.column, self.group_column)})
        batch = self.inner(stripped)
        labels = batch["labels"]
        if self.padding_free:
            lengths = [len(example["input_ids"]) for example in stripped]
            token_rewards = torch.zeros(labels.shape, dtype=torch.float32)
            flat = per_token_rewards(rewards, lengths)
            if labels.shape[0] != 1 or len(flat) > labels.shape[1]:
                raise ValueError(
                    f"a padding-free batch must be one row holding every sample's tokens, got labels of shape "
                    f"{tuple(labels.shape)} for samples of lengths {lengths}; the rewards cannot follow their tokens"
                )
            token_rewards[0, : len(flat)] = torch.tensor(flat, dtype=torch.float32)
            batch[REWARDS_KEY] = token_rewards
        else:
            if labels.shape[0] != len(examples):
                raise ValueError(
                    f"the collator must return one labels row per example, got {labels.shape[0]} rows for "
                    f"{len(examples)} examples; the rewards cannot follow their samples"
                )
            batch[REWARDS_KEY] = torch.tensor(rewards, dtype=torch.float32)
        return batch
