"""Datasets: keep, validate and normalize each row's reward while MS-Swift loads a dataset.

MS-Swift drops unknown dataset columns. ``DatasetLoader.load`` / ``RowPreprocessor.__call__`` /
``RowPreprocessor.remove_useless_columns`` keep the reward (and group) column, validate every
raw row (the first bad one is named), normalize over whole groups for the normalized
variants, and store the result as the ``_rift_reward`` column; warn loudly when they are all 0
(the run would train nothing on that dataset). In a run whose loss ignores rewards, warn
loudly about rewards < 0. The reading rules are ``integrations/_common.py``'s.
"""

from __future__ import annotations

from .. import _common
from .._core.patching import wrap
from . import config
from ._state import HOST, KEY, STATE, Run, logger


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
            checked = _common.check_json_rewards(syntax.dataset, column=column, dataset=syntax.dataset, host="MS-Swift")
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


def _check_raw_rewards(dataset, *, name: str, run: Run) -> None:
    """Validate the reward column of a dataset as read from its file (rows in file order)."""
    column = run.knobs.reward_column
    features = getattr(dataset, "features", None) or {}
    if column not in features:
        raise ValueError(
            f"dataset {name!r} must have a {column!r} column with one reward per row for --loss_type "
            f"{run.loss_type}, got columns {sorted(features)} (name yours with {config.ENV_REWARD_COLUMN}=...)"
        )
    what = f"--loss_type {run.loss_type}"
    _common.refuse_mixed_json_feature(features, column, dataset=name, what=what)
    _common.read_rewards(dataset[column], column=column, dataset=name)
    if "messages" in features and repr(column) in repr(features["messages"]):  # any file format, not only JSON
        for i, messages in enumerate(dataset["messages"]):
            _common.refuse_turn_rewards(
                {"messages": messages}, column=column, host="MS-Swift", where=f"row {i} of dataset {name!r}"
            )
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
    if column not in dataset.column_names:
        raise ValueError(
            f"dataset {name!r} must keep its {column!r} column through MS-Swift's preprocessing for --loss_type "
            f"{run.loss_type}, got columns {dataset.column_names} (name yours with {config.ENV_REWARD_COLUMN}=...)"
        )
    rewards = [
        _common.read_reward(v, column=column, where=f"row {i} of dataset {name!r} (after MS-Swift's preprocessing)")
        for i, v in enumerate(dataset[column])
    ]
    summary = (
        f"{sum(r > 0 for r in rewards)} > 0, {sum(r < 0 for r in rewards)} < 0, {sum(r == 0 for r in rewards)} = 0"
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
    warning = _common.zero_rewards_warning(
        rewards, raw, dataset=name, column=column, normalization=run.normalization, groups=groups, hint=hint
    )
    if warning:
        logger().warning(warning)
    drop = [c for c in (KEY,) if c in dataset.column_names]
    if remove_unused_columns:
        drop += [c for c in (column, run.knobs.group_column) if c in dataset.column_names]
    if drop:
        dataset = dataset.remove_columns(drop)
    dataset = dataset.add_column(KEY, rewards)
    logger().info(f"rift-losses: dataset {name!r}: {len(rewards)} rows with rewards ({summary})")
    return dataset


def _warn_negative_rewards(dataset, *, name: str) -> None:
    """In a training run whose loss ignores rewards, warn loudly about rows with reward < 0."""
    args = STATE.args
    if args is None or STATE.run is not None or getattr(args, "rlhf_type", None):
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
            name = getattr(dataset_syntax, "dataset", None) or str(dataset_syntax)
            previous, STATE.loading = STATE.loading, {"name": name, "raw_checked": False}
            try:
                dataset = original(self, dataset_syntax, *args, **kwargs)
            finally:
                STATE.loading = previous
            if STATE.run is not None:
                dataset = prepare_rewards(
                    dataset,
                    name=name,
                    run=STATE.run,
                    remove_unused_columns=getattr(self, "remove_unused_columns", True),
                )
            return dataset

        return load

    def make_call(original):
        def __call__(self, dataset, *args, **kwargs):
            loading = STATE.loading
            if STATE.run is not None and loading is not None and not loading["raw_checked"]:
                loading["raw_checked"] = True
                _check_raw_rewards(dataset, name=loading["name"], run=STATE.run)
            return original(self, dataset, *args, **kwargs)

        return __call__

    def make_remove(original):
        def remove_useless_columns(dataset):
            run, loading = STATE.run, STATE.loading
            if run is None:
                try:
                    _warn_negative_rewards(dataset, name=loading["name"] if loading else "?")
                except Exception as exc:  # a warning must never break MS-Swift
                    logger().warning(f"rift-losses: could not check the rewards for negative values: {exc!r}")
                return original(dataset)
            keep = [
                c
                for c in (run.knobs.reward_column, run.knobs.group_column)
                if c in (getattr(dataset, "features", None) or {})
            ]
            if not keep:
                return original(dataset)
            return _keep_columns(dataset, keep)

        return remove_useless_columns

    wrap(DatasetLoader, "load", make_load, host=HOST)
    wrap(RowPreprocessor, "__call__", make_call, host=HOST)
    wrap(RowPreprocessor, "remove_useless_columns", make_remove, static=True, host=HOST)
