"""Datasets: keep, validate and normalize each row's reward while MS-Swift loads a dataset.

MS-Swift drops unknown dataset columns. ``DatasetLoader.load`` / ``RowPreprocessor.__call__`` /
``RowPreprocessor.remove_useless_columns`` keep the reward (and group) column, validate every
raw row (the first bad one is named), normalize over whole groups for the normalized
variants, and store the result as the ``_rift_reward`` column; warn loudly when they are all 0
(the run would train nothing on that dataset). In a run whose loss ignores rewards, warn
loudly about rewards < 0. The reading rules are ``integrations/_common.py``'s.

Per-turn rewards (an assistant message's own ``reward``): validated on the raw rows
(:func:`._turns.raw_turn_rewards`), carried through MS-Swift's preprocessing in the private
column ``_rift_turns`` and put on the tokens at ``Template.encode`` (:mod:`._template`).
The patches act only while a pipeline prepares its datasets (:func:`._state.current`).
"""

from __future__ import annotations

from .. import _common
from .._core.patching import wrap
from .._core.turns import has_turn_rewards, per_row_only
from . import config
from ._state import HOST, KEY, Run, current, logger
from ._turns import TURNS_KEY, message_field, raw_turn_rewards


def _refuse_turns_for(run: Run, *, column: str, dataset: str) -> None:
    """The normalized losses and the sequence level take one reward per row: per-turn rewards are refused."""
    if run.normalization is None and run.knobs.level == "token":
        return
    option = f"--loss_type {run.loss_type}" if run.normalization else f"{config.ENV_LEVEL}={run.knobs.level}"
    raise ValueError(
        per_row_only(
            option,
            column=column,
            dataset=dataset,
            fix=f"use --loss_type {config.PLAIN_LOSS_TYPE} (or rift_naive) with {config.ENV_LEVEL}=token, or move the "
            "reward to the row",
        )
    )


def _row_turns(record, where: str, *, column: str, dataset: str, run: Run, renames=None) -> list[float] | None:
    """A raw row's per-turn rewards, validated (its own reward too, when it has one); None without any."""
    field = message_field(record, renames)
    if field is None or not has_turn_rewards(record[field] if isinstance(record[field], list) else (), column=column):
        return None
    value = record.get(column)
    row_reward = None if value is None else _common.read_reward(value, column=column, where=where)
    turns = raw_turn_rewards(record[field], row_reward, column=column, where=where)
    if turns is not None:
        _refuse_turns_for(run, column=column, dataset=dataset)
    return turns


def check_local_rewards(args, run: Run) -> None:
    """Check the raw rewards of every local JSON / JSONL ``--dataset`` and ``--val_dataset`` (before the model loads).

    ``datasets`` 4.x loads a column of numbers with one string ``"1.0"`` as its ``Json`` feature,
    which turns the string into the number 1.0: only the file shows it. ``--columns`` renames
    are followed back to the file's column name.
    """
    from swift.dataset.dataset_syntax import DatasetSyntax

    column = run.knobs.reward_column
    renames = getattr(args, "columns", None)
    if isinstance(renames, dict):  # --columns '{"score": "reward"}': the file calls it "score"
        column = next((old for old, new in renames.items() if new == column), column)
    for value in [*(getattr(args, "dataset", None) or []), *(getattr(args, "val_dataset", None) or [])]:
        try:
            syntax = DatasetSyntax.parse(value)
        except Exception:  # MS-Swift reports a bad dataset argument itself
            continue
        if getattr(syntax, "dataset_type", None) == "path":
            name = syntax.dataset

            def turns(record, where, name=name):
                return _row_turns(record, where, column=column, dataset=name, run=run, renames=renames) is not None

            checked = _common.check_json_rewards(name, column=column, dataset=name, turns=turns)
            if checked is None:
                _check_first_row_has(syntax.dataset, column=column, run=run)


def _check_first_row_has(path: str, *, column: str, run: Run) -> None:
    """A local JSON file whose rows have no reward column: refused now, before the model loads."""
    first = next(iter(_common.json_rows(path) or ()), None)
    if first is None or not isinstance(first[2], dict) or column in first[2]:
        return  # not a file we read, or the column is there: MS-Swift's loader and the checks after it decide
    raise ValueError(
        f"dataset {path!r} must have a {column!r} column with one reward per row for --loss_type "
        f"{run.loss_type}, got columns {sorted(first[2])} (name yours with {config.ENV_REWARD_COLUMN}=...)"
    )


def _check_raw_rewards(dataset, *, name: str, run: Run, renames=None) -> list | None:
    """Validate the reward column of a dataset as read from its file (rows in file order).

    Returns the :data:`TURNS_KEY` column for a dataset with per-turn rewards (one value per
    row: ``{"where": ..., "rewards": [...]}`` or None), else None. ``renames``: the
    preprocessor's column renames (old -> new), to find a messages column under another name.
    """
    column = run.knobs.reward_column
    features = getattr(dataset, "features", None) or {}
    field = message_field(features, renames)
    # any file format, not only JSON; `datasets` may load the messages as Json values (so not from the features)
    candidate = field is not None and any(
        isinstance(m, list) and has_turn_rewards(m, column=column) for m in dataset[field]
    )
    if column not in features and not candidate:
        raise ValueError(
            f"dataset {name!r} must have a {column!r} column with one reward per row for --loss_type "
            f"{run.loss_type}, got columns {sorted(features)} (name yours with {config.ENV_REWARD_COLUMN}=...)"
        )
    what = f"--loss_type {run.loss_type}"
    if column in features:
        _common.refuse_mixed_json_feature(features, column, dataset=name, what=what)
    turns = None
    if candidate:
        values = dataset[column] if column in features else [None] * len(dataset)
        turns = []
        for i, (messages, value) in enumerate(zip(dataset[field], values)):
            where = f"row {i} of dataset {name!r}"
            record = {field: messages, column: value}
            rewards = _row_turns(record, where, column=column, dataset=name, run=run, renames=renames)
            if rewards is None:
                _common.read_reward(value, column=column, where=where)
            turns.append(None if rewards is None else {"where": where, "rewards": rewards})
        if not any(t is not None for t in turns):
            turns = None
    else:
        _common.read_rewards(dataset[column], column=column, dataset=name)
    group = run.knobs.group_column
    if run.normalization and run.knobs.group_column_given and group not in features:
        raise ValueError(
            f"dataset {name!r} must have the {group!r} column that {config.ENV_GROUP_COLUMN} names for --loss_type "
            f"{run.loss_type}, got columns {sorted(features)} (unset {config.ENV_GROUP_COLUMN} to group rows by "
            "their prompt)"
        )
    if run.normalization and group in features:
        _common.refuse_mixed_json_feature(features, group, dataset=name, what=what, group=True)
        for i, value in enumerate(dataset[group]):
            _common.read_group(value, column=group, where=f"row {i} of dataset {name!r}")
    return turns


def _group_keys(dataset, *, name: str, run: Run) -> tuple[list, str]:
    column = run.knobs.group_column
    if column in dataset.column_names:
        keys = [
            _common.read_group(v, column=column, where=f"row {i} of dataset {name!r} (after MS-Swift's preprocessing)")
            for i, v in enumerate(dataset[column])
        ]
        return keys, f"column {column!r}"
    extras = [c for c in _common.PROMPT_FIELDS if c in dataset.column_names]
    extra_values = {c: dataset[c] for c in extras}
    keys = [
        _common.row_prompt_key(
            messages,
            {c: extra_values[c][i] for c in extras},
            where=f"row {i} of dataset {name!r} (after MS-Swift's preprocessing)",
        )
        for i, messages in enumerate(dataset["messages"])
    ]
    return keys, "the prompt (every message before the last assistant turn)"


def prepare_rewards(dataset, *, name: str, run: Run, remove_unused_columns: bool = True):
    """The loaded dataset with its validated (and, if asked, normalized) rewards in column ``KEY``."""
    from datasets import Dataset as HfDataset

    if not isinstance(dataset, HfDataset):
        raise ValueError(
            f"dataset {name!r} must be a map-style dataset for --loss_type {run.loss_type}, got "
            f"{type(dataset).__name__}"
        )
    column = run.knobs.reward_column
    n = len(dataset)
    turns = dataset[TURNS_KEY] if TURNS_KEY in dataset.column_names else [None] * n
    if column not in dataset.column_names and not any(t is not None for t in turns):
        raise ValueError(
            f"dataset {name!r} must keep its {column!r} column through MS-Swift's preprocessing for --loss_type "
            f"{run.loss_type}, got columns {dataset.column_names} (name yours with {config.ENV_REWARD_COLUMN}=...)"
        )
    values = dataset[column] if column in dataset.column_names else [None] * n
    rewards = [
        None
        if turn is not None and value is None  # a per-turn row without a reward of its own
        else _common.read_reward(
            value, column=column, where=f"row {i} of dataset {name!r} (after MS-Swift's preprocessing)"
        )
        for i, (value, turn) in enumerate(zip(values, turns))
    ]
    row_level = [r for r, t in zip(rewards, turns) if t is None]
    turn_level = [r for t in turns if t is not None for r in t["rewards"]]
    summary = (
        f"{sum(r > 0 for r in row_level)} > 0, {sum(r < 0 for r in row_level)} < 0, "
        f"{sum(r == 0 for r in row_level)} = 0"
    )
    if turn_level:
        summary = (f"{len(row_level)} with one reward: {summary}; " if row_level else "") + (
            f"{n - len(row_level)} with per-turn rewards: {len(turn_level)} assistant turns, "
            f"{sum(r > 0 for r in turn_level)} > 0, {sum(r < 0 for r in turn_level)} < 0, "
            f"{sum(r == 0 for r in turn_level)} = 0"
        )
    raw, groups = rewards, None
    if run.normalization:
        keys, by = _group_keys(dataset, name=name, run=run)
        rewards = _common.normalize_dataset_rewards(rewards, keys, method=run.normalization)
        groups = len(set(keys))
        summary += f"; normalized by {run.normalization} within {groups} groups (by {by})"
    hint = (
        f"Give each group several responses with different rewards ({config.ENV_GROUP_COLUMN}, or the prompt), "
        f"or train on the raw rewards (--loss_type {config.PLAIN_LOSS_TYPE})."
        if run.normalization and any(raw)
        else f"Check the {column!r} column: the responses must be graded (+1.0 right, -0.2 wrong in the paper)."
    )
    seen = [*(r for r, t in zip(rewards, turns) if t is None), *turn_level]  # what the loss weighs
    warning = _common.zero_rewards_warning(
        seen,
        seen if turn_level else raw,
        dataset=name,
        column=column,
        normalization=run.normalization,
        groups=groups,
        hint=hint,
    )
    if warning:
        logger().warning(warning)
    drop = [c for c in (KEY,) if c in dataset.column_names]
    if remove_unused_columns:
        drop += [c for c in (column, run.knobs.group_column) if c in dataset.column_names]
    if drop:
        dataset = dataset.remove_columns(drop)
    dataset = dataset.add_column(KEY, rewards)
    if TURNS_KEY not in dataset.column_names:  # every dataset of a run has the column: MS-Swift concatenates them
        dataset = dataset.add_column(TURNS_KEY, [None] * n)
    logger().info(f"rift-losses: dataset {name!r}: {len(rewards)} rows with rewards ({summary})")
    return dataset


def _warn_negative_rewards(dataset, *, name: str) -> None:
    """In a training run whose loss ignores rewards, warn loudly about rows with reward < 0."""
    pipeline = current()
    args = pipeline.args if pipeline is not None else None
    if args is None or pipeline.run is not None or getattr(args, "rlhf_type", None):
        return
    column = config.reward_column_or_default()
    features = getattr(dataset, "features", None) or {}
    if column not in features or not hasattr(dataset, "__len__"):
        return
    negatives, numbers = _common.count_negative(dataset[column])
    if negatives:
        loss = f"--loss_type {args.loss_type}" if getattr(args, "loss_type", None) else "the default cross-entropy"
        hint = (
            f"Train with --loss_type {' / '.join(config.LOSS_TYPES)} to use the rewards, "
            "or drop the rows with negative rewards (RFT)."
        )
        logger().warning(
            _common.negative_reward_warning(
                dataset=name, column=column, negatives=negatives, rows=numbers, loss=loss, hint=hint
            )
        )


def _keep_columns(dataset, keep: list[str]):
    """MS-Swift's ``RowPreprocessor.remove_useless_columns`` keeping ``keep`` too (no class attribute changed).

    The same selection as MS-Swift 4.6's: the standard keys present in the features, in their
    order, then the reward and group columns.
    """
    from swift.dataset import RowPreprocessor

    dataset = RowPreprocessor.get_features_dataset(dataset)
    features = dataset.features
    wanted = [*RowPreprocessor.standard_keys, *(c for c in keep if c not in RowPreprocessor.standard_keys)]
    k_list = [k for k in wanted if k in features]
    if len(k_list) != len(features):
        dataset = dataset.select_columns(k_list)
    return dataset


def install_dataset_patches() -> None:
    from swift.dataset import DatasetLoader, RowPreprocessor

    def make_load(original):
        def load(self, dataset_syntax=None, *args, **kwargs):
            pipeline = current()
            if pipeline is None:  # not inside a pipeline's _prepare_dataset: MS-Swift's own behaviour
                return original(self, dataset_syntax, *args, **kwargs)
            name = getattr(dataset_syntax, "dataset", None) or str(dataset_syntax)
            previous, pipeline.loading = pipeline.loading, {"name": name, "raw_checked": False}
            try:
                dataset = original(self, dataset_syntax, *args, **kwargs)
            finally:
                pipeline.loading = previous
            if pipeline.run is not None:
                dataset = prepare_rewards(
                    dataset,
                    name=name,
                    run=pipeline.run,
                    remove_unused_columns=getattr(self, "remove_unused_columns", True),
                )
            return dataset

        return load

    def make_call(original):
        def __call__(self, dataset, *args, **kwargs):
            pipeline = current()
            loading = pipeline.loading if pipeline is not None else None
            if pipeline is not None and pipeline.run is not None and loading is not None and not loading["raw_checked"]:
                loading["raw_checked"] = True
                renames = {**getattr(self, "columns", {}), **getattr(self, "origin_columns", {})}
                turns = _check_raw_rewards(dataset, name=loading["name"], run=pipeline.run, renames=renames)
                if turns is not None:  # carried past MS-Swift's preprocessing, which drops unknown message keys
                    dataset = dataset.add_column(TURNS_KEY, turns)
            return original(self, dataset, *args, **kwargs)

        return __call__

    def make_remove(original):
        def remove_useless_columns(dataset):
            pipeline = current()
            run = pipeline.run if pipeline is not None else None
            loading = pipeline.loading if pipeline is not None else None
            if run is None:
                try:
                    _warn_negative_rewards(dataset, name=loading["name"] if loading else "?")
                except Exception as exc:  # a warning must never break MS-Swift
                    logger().warning(f"rift-losses: could not check the rewards for negative values: {exc!r}")
                return original(dataset)
            keep = [
                c
                for c in (run.knobs.reward_column, run.knobs.group_column, TURNS_KEY)
                if c in (getattr(dataset, "features", None) or {})
            ]
            if not keep:
                return original(dataset)
            return _keep_columns(dataset, keep)

        return remove_useless_columns

    wrap(DatasetLoader, "load", make_load, host=HOST)
    wrap(RowPreprocessor, "__call__", make_call, host=HOST)
    wrap(RowPreprocessor, "remove_useless_columns", make_remove, static=True, host=HOST)
