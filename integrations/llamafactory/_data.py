"""Carry each sample's reward through LLaMA-Factory's data pipeline, validated, in order.

LLaMA-Factory drops unknown dataset columns twice (the format converter and the dataset
processor keep only their own fields) and its processor silently skips malformed samples.
So, only for a run parsed with ``use_rift_loss: true`` (``data_args.rift_config``):

1. ``DatasetAttr.join`` also reads ``"reward"`` and ``"group"`` from a dataset's
   ``dataset_info.json`` ``columns`` (alpaca, sharegpt and openai formats alike).
2. ``_load_single_dataset``: before ``datasets`` reads a local JSON / JSONL file, every raw value
   of its reward column must be a JSON number (not ``"1.0"``, not ``true``): ``datasets`` fails
   on such a column with "Trailing data at position ...", naming no column or row. Should the
   loader still fail, a column that mixes JSON types (e.g. a group id ``1`` and ``"1"``) is named.
3. ``align_dataset`` (per dataset, before merging): the reward column must be mapped and
   present, and every value a finite number; the group column likewise when
   ``rift_reward_normalization`` is set (ids: strings or numbers). Errors name the dataset,
   the column and the row (the checks are ``integrations/_common.py``'s, shared with MS-Swift).
   The converted dataset (one row per input row, same order) gets ``_rift_reward`` (and
   ``_rift_group``) added back.
4. The dataset processor runs one sample at a time (:class:`RewardCarryingProcessor`): a
   sample the processor drops takes its reward with it, so rewards can never shift onto
   other samples. The processed rows carry ``rift_reward`` (and ``rift_group``); these are
   what ``tokenized_path`` saves.
5. ``get_dataset`` (the SFT workflow's, after loading or processing, cached or not):
   normalizes the rewards over whole groups of each split with the core's
   ``normalize_rewards`` (eq. 6-8), and drops the group column. A split whose rewards are all
   0 (after normalization) gets a loud warning: it would train nothing.

Row numbers in errors are 0-based positions in the dataset as loaded (file order unless
``num_samples`` re-sampled it).
"""

import os

from .._common import (
    PROMPT_FIELDS,
    check_json_rewards,
    mixed_json_column,
    normalize_dataset_rewards,
    read_group,
    read_rewards,
    row_prompt_key,
    zero_rewards_warning,
)
from .._core.patching import wrap_all
from ._run import GROUP, GROUP_IN, HOST, REWARD, REWARD_IN, config_of

# ---------------------------------------------------------------- LLaMA-Factory patches


def _info_file(data_args) -> str:
    if isinstance(data_args.dataset_dir, str) and not data_args.dataset_dir.startswith(("ONLINE", "REMOTE:")):
        return os.path.join(data_args.dataset_dir, "dataset_info.json")
    return "dataset_info.json"


def _column(dataset, dataset_attr, data_args, role: str, why: str) -> str:
    name = getattr(dataset_attr, "rift_dataset_name", repr(dataset_attr))
    column = getattr(dataset_attr, f"rift_{role}_column", None)
    if column is None:
        raise ValueError(
            f'columns must map "{role}" for dataset {name!r} in {_info_file(data_args)} {why}, got no "{role}" '
            f'entry (e.g. "columns": {{..., "{role}": "<column of your data>"}})'
        )
    if column not in dataset.column_names:
        raise ValueError(
            f"columns.{role} of dataset {name!r} must name a column of its data, got {column!r}; the data has "
            f"columns {dataset.column_names}"
        )
    return column


def group_keys(values, *, column: str, dataset: str) -> list[str]:
    """The group of each row: its ``group`` column's id as JSON text (1 and "1" stay different groups)."""
    return [
        read_group(value, column=column, where=f"row {row} of dataset {dataset!r}") for row, value in enumerate(values)
    ]


def prompt_group_keys(aligned, *, dataset: str) -> list[str]:
    """The group of each row without a ``group`` column: its prompt, the key every host uses.

    From LLaMA-Factory's aligned columns: ``_system`` (a system message when non-empty),
    ``_prompt`` (the turns before the response), ``_tools``, ``_images``, ``_videos``, ``_audios``.
    """
    columns = aligned.column_names
    n = len(aligned)
    systems = aligned["_system"] if "_system" in columns else [None] * n
    fields = {name: aligned[f"_{name}"] for name in PROMPT_FIELDS if f"_{name}" in columns}
    keys = []
    for i, prompt in enumerate(aligned["_prompt"]):
        messages = ([{"role": "system", "content": systems[i]}] if systems[i] else []) + list(prompt or [])
        messages.append({"role": "assistant", "content": ""})
        where = f"row {i} of dataset {dataset!r}"
        keys.append(row_prompt_key(messages, {k: v[i] for k, v in fields.items()}, where=where))
    return keys


def _align_dataset(original):
    def align_dataset(dataset, dataset_attr, data_args, training_args):
        config = config_of(data_args)
        if config is None:
            return original(dataset, dataset_attr, data_args, training_args)
        name = getattr(dataset_attr, "rift_dataset_name", repr(dataset_attr))
        column = _column(dataset, dataset_attr, data_args, "reward", "when use_rift_loss is true")
        rewards = read_rewards(list(dataset[column]), column=column, dataset=name)
        groups = None
        by_prompt = config.normalization != "none" and getattr(dataset_attr, "rift_group_column", None) is None
        if config.normalization != "none" and not by_prompt:
            why = f"when rift_reward_normalization is {config.normalization!r} (a group is one prompt's responses)"
            group_column = _column(dataset, dataset_attr, data_args, "group", why)
            groups = group_keys(dataset[group_column], column=group_column, dataset=name)
        aligned = original(dataset, dataset_attr, data_args, training_args)
        if len(aligned) != len(rewards):  # the converter maps one row to one row
            raise RuntimeError(f"dataset {name!r}: format conversion changed the row count, rewards cannot follow")
        if by_prompt:  # no "group" mapped: the prompt groups rows, as in every host
            groups = prompt_group_keys(aligned, dataset=name)
        aligned = aligned.add_column(REWARD_IN, rewards)
        if groups is not None:
            aligned = aligned.add_column(GROUP_IN, groups)
        return aligned

    return align_dataset


def _local_files(dataset_attr, data_args) -> list[str]:
    """The files LLaMA-Factory loads for a ``file_name`` dataset (its own rule), else []."""
    if getattr(dataset_attr, "load_from", None) != "file" or not isinstance(data_args.dataset_dir, str):
        return []
    path = os.path.join(data_args.dataset_dir, dataset_attr.dataset_name)
    if os.path.isdir(path):
        return [os.path.join(path, name) for name in os.listdir(path)]
    return [path] if os.path.isfile(path) else []


def _load_single_dataset(original):
    def load_single_dataset(dataset_attr, model_args, data_args, training_args):
        if config_of(data_args) is None:
            return original(dataset_attr, model_args, data_args, training_args)
        from datasets.exceptions import DatasetGenerationError

        name = getattr(dataset_attr, "rift_dataset_name", repr(dataset_attr))
        files = _local_files(dataset_attr, data_args)
        column = getattr(dataset_attr, "rift_reward_column", None)
        for path in files if column else ():  # the raw values, before `datasets` converts or chokes on them
            check_json_rewards(path, column=column, dataset=name, host="LLaMA-Factory")
        try:
            return original(dataset_attr, model_args, data_args, training_args)
        except DatasetGenerationError as exc:  # e.g. "Trailing data at position ...", naming nothing
            for path in files:
                mixed = mixed_json_column(path)
                if mixed:
                    raise ValueError(
                        f"dataset {name!r} must hold one JSON type per column for `datasets` to load it, got: {mixed}"
                    ) from exc
            raise

    return load_single_dataset


class RewardCarryingProcessor:
    """LLaMA-Factory's dataset processor, run one sample at a time so rewards follow samples.

    The processor emits zero rows for a sample it drops (malformed turns) and one row
    otherwise; the reward (and group) of exactly that sample is appended to each row it
    emitted. Same work as the processor's own loop, which is per sample anyway.
    """

    def __init__(self, inner):
        self.inner = inner

    def preprocess_dataset(self, examples: dict) -> dict:
        if REWARD_IN not in examples:
            raise ValueError(
                f"examples must carry {REWARD_IN!r} when use_rift_loss is true, got columns {sorted(examples)}: "
                "this dataset did not pass through rift-losses' format conversion"
            )
        rewards, groups = examples[REWARD_IN], examples.get(GROUP_IN)
        out: dict = {}
        for i in range(len(rewards)):
            rows = self.inner.preprocess_dataset({k: v[i : i + 1] for k, v in examples.items()})
            kept = len(rows.get("input_ids", ()))
            if kept == 0:
                continue  # dropped by the processor (it logs why); its reward goes with it
            if kept != 1:
                raise RuntimeError(f"the dataset processor made {kept} rows of one sample; rewards cannot follow")
            for key, value in rows.items():
                out.setdefault(key, []).extend(value)
            out.setdefault(REWARD, []).append(rewards[i])
            if groups is not None:
                out.setdefault(GROUP, []).append(groups[i])
        return out

    def print_data_example(self, example) -> None:
        self.inner.print_data_example(example)


def _get_dataset_processor(original):
    def get_dataset_processor(data_args, stage, template, tokenizer, processor, *args, **kwargs):
        inner = original(data_args, stage, template, tokenizer, processor, *args, **kwargs)
        if config_of(data_args) is None:
            return inner
        if "Packed" in type(inner).__name__:  # refused at parse time; never reached
            raise ValueError("packing must be false with use_rift_loss, got a packed dataset processor")
        return RewardCarryingProcessor(inner)

    return get_dataset_processor


def _get_dataset_list(original):
    def get_dataset_list(dataset_names, dataset_dir):
        attrs = original(dataset_names, dataset_dir)
        for name, attr in zip(dataset_names or (), attrs):
            attr.rift_dataset_name = name
        return attrs

    return get_dataset_list


def _join(original):
    def join(self, attr):
        original(self, attr)
        columns = attr.get("columns") or {}
        self.rift_reward_column = columns.get("reward")
        self.rift_group_column = columns.get("group")
        tags = attr.get("tags") or {}
        if tags.get("reward_tag") is not None:  # LLaMA-Factory ignores unknown tags: refuse, not drop
            raise ValueError(
                f"tags.reward_tag must not be set for dataset {getattr(self, 'dataset_name', '?')!r}, got "
                f"{tags['reward_tag']!r}: per-message rewards are not read by the LLaMA-Factory adapter yet (TRL's "
                'reads them); map one reward per row with "columns": {"reward": ...}'
            )

    return join


def _finalize(dataset, split: str, config, data_args):
    """Rewards of one processed split: present, then normalized over its whole groups."""
    from llamafactory.extras import logging

    source = f"tokenized_path {data_args.tokenized_path!r}" if data_args.tokenized_path else "the processed data"
    if REWARD not in dataset.column_names:
        raise ValueError(
            f"{split} must carry a {REWARD!r} column when use_rift_loss is true, got columns "
            f"{dataset.column_names} from {source}: it was saved by a run without use_rift_loss; delete it or "
            "point tokenized_path elsewhere"
        )
    rewards = raw = list(dataset[REWARD])
    drop = [GROUP] if GROUP in dataset.column_names else []
    note, groups, normalization = "", None, None
    if config.normalization != "none":
        if not drop:
            raise ValueError(
                f"{split} must carry a {GROUP!r} column when rift_reward_normalization is "
                f"{config.normalization!r}, got columns {dataset.column_names} from {source}: it was saved "
                "without groups; delete it or point tokenized_path elsewhere"
            )
        keys = list(dataset[GROUP])
        rewards = normalize_dataset_rewards(rewards, keys, method=config.normalization)
        drop.append(REWARD)
        normalization, groups = config.normalization, len(set(keys))
        note = f", normalized ({normalization}) over {groups} whole groups"
    if drop:
        dataset = dataset.remove_columns(drop)
    if REWARD in drop:
        dataset = dataset.add_column(REWARD, rewards)
    pos = sum(r > 0 for r in rewards)
    neg = sum(r < 0 for r in rewards)
    # A child of LLaMA-Factory's library logger, so it prints with LLaMA-Factory's handler and format.
    logger = logging.get_logger("llamafactory.rift_losses")
    logger.info_rank0(
        f"RIFT {split}: {len(rewards)} rewards ({pos} > 0, {neg} < 0, {len(rewards) - pos - neg} = 0){note}."
    )
    hint = (
        'Give each group several responses with different rewards (the "group" column), or set '
        "rift_reward_normalization: none."
        if normalization and any(raw)
        else 'Check the "reward" column: the responses must be graded (+1.0 right, -0.2 wrong in the paper).'
    )
    names = (data_args.eval_dataset if split.startswith("eval") else data_args.dataset) or ()
    label = split if "'" in split or not names else f"{split} ({', '.join(names)})"
    warning = zero_rewards_warning(
        rewards, raw, dataset=label, column="reward", normalization=normalization, groups=groups, hint=hint
    )
    if warning:
        logger.warning_rank0(warning)
    return dataset


def _get_dataset(original):
    def get_dataset(template, model_args, data_args, training_args, *args, **kwargs):
        module = original(template, model_args, data_args, training_args, *args, **kwargs)
        config = config_of(data_args)
        if config is None:
            return module
        for key in ("train_dataset", "eval_dataset"):
            data = module.get(key)
            if isinstance(data, dict):
                module[key] = {n: _finalize(d, f"{key} {n!r}", config, data_args) for n, d in data.items()}
            elif data is not None:
                module[key] = _finalize(data, key, config, data_args)
        return module

    return get_dataset


_PATCHES = (
    # (module, attribute, wrapper): each attribute is looked up at call time by LLaMA-Factory.
    ("llamafactory.data.parser", "DatasetAttr.join", _join),
    ("llamafactory.data.loader", "get_dataset_list", _get_dataset_list),
    ("llamafactory.data.loader", "_load_single_dataset", _load_single_dataset),
    ("llamafactory.data.loader", "align_dataset", _align_dataset),
    ("llamafactory.data.loader", "_get_dataset_processor", _get_dataset_processor),
    ("llamafactory.train.sft.workflow", "get_dataset", _get_dataset),
)


def install() -> None:
    """Wrap LLaMA-Factory's data hook points (idempotent; inert for runs without RIFT)."""
    wrap_all(_PATCHES, host=HOST)
