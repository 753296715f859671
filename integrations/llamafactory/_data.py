"""Carry each sample's reward through LLaMA-Factory's data pipeline, validated, in order.

LLaMA-Factory drops unknown dataset columns twice (the format converter and the dataset
processor keep only their own fields) and its processor silently skips malformed samples.
So, only for a run parsed with ``use_rift_loss: true`` (``data_args.rift_config``):

1. ``DatasetAttr.join`` also reads ``"reward"`` and ``"group"`` from a dataset's
   ``dataset_info.json`` ``columns`` (alpaca, sharegpt and openai formats alike), and
   ``"reward_tag"`` from a sharegpt dataset's ``tags`` (the key of a message's own reward); a tag
   key it does not know is refused (LLaMA-Factory ignores it), with "did you mean".
2. ``_load_single_dataset``: before ``datasets`` reads a local JSON / JSONL file, every raw value
   of its reward column must be a JSON number (not ``"1.0"``, not ``true``): ``datasets`` fails
   on such a column with "Trailing data at position ...", naming no column or row. Should the
   loader still fail, a column that mixes JSON types (e.g. a group id ``1`` and ``"1"``) is named.
   Per-message rewards likewise (``integrations/_core/turns.py``'s rule: file, row, message
   index); without ``reward_tag`` a message carrying the reward key is refused (it would vanish).
3. ``align_dataset`` (per dataset, before merging): the reward column must be mapped and
   present, and every value a finite number; the group column likewise when
   ``rift_reward_normalization`` is set (ids: strings or numbers). Errors name the dataset,
   the column and the row (the checks are ``integrations/_common.py``'s, shared with MS-Swift).
   The converted dataset (one row per input row, same order) gets ``_rift_reward`` (and
   ``_rift_group``) added back, and ``_rift_turn_rewards``: one reward per trained message (the
   targets of LLaMA-Factory's turn pairs) for a row with per-message rewards, else None.
4. The dataset processor runs one sample at a time (:class:`RewardCarryingProcessor`): a
   sample the processor drops takes its reward with it, so rewards can never shift onto
   other samples. The processed rows carry ``rift_reward`` (and ``rift_group``); these are
   what ``tokenized_path`` saves. When some row has per-turn rewards, every row also carries
   ``rift_token_rewards`` (aligned with ``input_ids``; :func:`turn_token_rewards` finds each
   turn's tokens in LLaMA-Factory's own encoding) and ``rift_turn_rewards``.
5. ``get_dataset`` (the SFT workflow's, after loading or processing, cached or not):
   normalizes the rewards over whole groups of each split with the core's
   ``normalize_rewards`` (eq. 6-8), and drops the group column. A split whose rewards are all
   0 (after normalization) gets a loud warning: it would train nothing.

Row numbers in errors are 0-based positions in the dataset as loaded (file order unless
``num_samples`` re-sampled it).
"""

import copy
import dataclasses
import os

from rift_losses._fields import short

from .._common import (
    PROMPT_FIELDS,
    _where,
    check_json_rewards,
    json_rows,
    mixed_json_column,
    normalize_dataset_rewards,
    one_of,
    read_group,
    read_reward,
    read_rewards,
    row_prompt_key,
    zero_rewards_warning,
)
from .._core.loss import IGNORE_INDEX
from .._core.patching import wrap_all
from .._core.turns import has_turn_rewards, message_rewards, per_row_only
from ._run import (
    GROUP,
    GROUP_IN,
    HOST,
    REWARD,
    REWARD_IN,
    TOKEN_REWARDS,
    TURNS,
    TURNS_IN,
    WHERE_IN,
    config_of,
)

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


# ---------------------------------------------------------------- per-turn rewards (sharegpt)


def _reward_tag(dataset_attr) -> str | None:
    return getattr(dataset_attr, "rift_reward_tag", None)


def _untagged_turn_rewards(messages, *, column: str, tag_hint: str, where: str) -> None:
    """Refuse messages that carry the reward column's key in a dataset without ``reward_tag`` (it would vanish)."""
    for index, message in enumerate(messages if isinstance(messages, list) else ()):
        if isinstance(message, dict) and message.get(column) is not None:
            raise ValueError(
                f"tags.reward_tag must name the per-message reward to train it, got {column}={short(message[column])} "
                f"on message {index} in {where} and no reward_tag: LLaMA-Factory's converter keeps only a message's "
                f'role and content, so it would vanish. Add "tags": {{"reward_tag": "{column}"}} to {tag_hint} '
                "(sharegpt datasets), or move the reward to the row"
            )


def turn_rewards(messages, row_reward: float | None, *, dataset_attr, where: str) -> list[float] | None:
    """The rewards of the trained messages of a sharegpt row, in order (one per LLaMA-Factory turn pair).

    None for a row whose messages carry no reward of their own (the row's reward then weighs
    all its tokens). A trained message (the ``assistant_tag`` and ``function_tag`` roles: the
    targets of LLaMA-Factory's turn pairs) without one gets ``row_reward``; the checks and
    their errors (file, row, message index) are :func:`integrations._core.turns.message_rewards`'s.
    """
    tag = _reward_tag(dataset_attr)
    if tag is None or not isinstance(messages, list):
        return None
    if not has_turn_rewards(messages, column=tag) and row_reward is not None:
        return None
    trained = (dataset_attr.assistant_tag, dataset_attr.function_tag)
    view = []
    for message in messages:  # the host's roles as the shared rule's: a trained message is an "assistant" one
        if not isinstance(message, dict):
            view.append(message)
            continue
        role = message.get(dataset_attr.role_tag)
        view.append({"role": "assistant" if role in trained else role, tag: message.get(tag)})
    rewards = [r for r in message_rewards(view, row_reward, column=tag, where=where) if r is not None]
    return rewards if has_turn_rewards(messages, column=tag) else None


def _row_reward(value, *, column: str, tagged: bool, where: str) -> float | None:
    """A row's own reward; with ``reward_tag`` it may be absent (each trained message then needs its own)."""
    if value is None and tagged:
        return None
    return read_reward(value, column=column, where=where)


def _per_row_option(config) -> str | None:
    """The option of the run that needs one reward per row (a normalization, the sequence level), or None."""
    if config.normalization != "none":
        return f"rift_reward_normalization: {config.normalization!r}"
    return f"rift_level: {config.level!r}" if config.level != "token" else None


def _check_turn_options(data_args, config, *, dataset: str, tag: str) -> None:
    """Refuse the options that cannot train per-turn rewards (the dataset has some), naming why."""
    option = _per_row_option(config)
    if option:
        fix = "use rift_reward_normalization: none and rift_level: token, or move the reward to the row"
        raise ValueError(per_row_only(option, column=tag, dataset=dataset, fix=fix))
    if getattr(data_args, "train_on_prompt", False):
        raise ValueError(
            f"train_on_prompt must be false with per-turn rewards, got true for dataset {dataset!r}: a prompt token "
            "belongs to no assistant turn, so it has no reward of its own; set train_on_prompt: false, or move the "
            "reward to the row"
        )


def _align_dataset(original):
    def align_dataset(dataset, dataset_attr, data_args, training_args):
        config = config_of(data_args)
        if config is None:
            return original(dataset, dataset_attr, data_args, training_args)
        name = getattr(dataset_attr, "rift_dataset_name", repr(dataset_attr))
        tag = _reward_tag(dataset_attr)
        messages = getattr(dataset_attr, "messages", None)
        conversations = list(dataset[messages]) if messages in dataset.column_names else None
        if tag is not None and getattr(dataset_attr, "rift_reward_column", None) is None:
            column, values = tag, [None] * len(dataset)  # every trained message carries its own reward
        else:
            column = _column(dataset, dataset_attr, data_args, "reward", "when use_rift_loss is true")
            values = list(dataset[column])
        wheres = [f"row {i} of dataset {name!r}" for i in range(len(dataset))]
        if tag is None:
            rewards = read_rewards(values, column=column, dataset=name)
            turns = [None] * len(dataset)
            for i, conversation in enumerate(conversations or ()):
                _untagged_turn_rewards(conversation, column=column, tag_hint=_info_file(data_args), where=wheres[i])
        else:
            own = [_row_reward(v, column=column, tagged=True, where=w) for v, w in zip(values, wheres)]
            turns = [
                turn_rewards(c, r, dataset_attr=dataset_attr, where=w)
                for c, r, w in zip(conversations or [None] * len(dataset), own, wheres)
            ]
            for r, t, w in zip(own, turns, wheres):
                if r is None and t is None:  # no trained message to carry a reward either
                    read_reward(r, column=column, where=w)
            rewards = [0.0 if r is None else r for r in own]  # a per-turn row's tokens carry their turn's
            if any(t is not None for t in turns):
                _check_turn_options(data_args, config, dataset=name, tag=tag)
                data_args.rift_turns = True  # the processor gives every row one reward per token
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
        from datasets import List, Value

        aligned = aligned.add_column(REWARD_IN, rewards)
        aligned = aligned.add_column(TURNS_IN, turns, feature=List(Value("float64")))
        aligned = aligned.add_column(WHERE_IN, wheres)
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


def _check_json_turns(path: str, dataset_attr, data_args, *, column: str | None, dataset: str) -> None:
    """The raw rewards of a local JSON file's rows and messages, before ``datasets`` loads (or chokes on) them.

    With ``reward_tag``: each row's own reward (when present) and each message's, by
    :func:`turn_rewards`; without: no message may carry the reward column's key.
    """
    tag = _reward_tag(dataset_attr)
    messages = getattr(dataset_attr, "messages", None)
    rows = json_rows(path) if tag or (column and messages) else None
    for row, line, record in rows or ():
        if not isinstance(record, dict):
            return
        where = _where(row, line, dataset=dataset, path=path)
        conversation = record.get(messages) if messages else None
        if tag is None:
            _untagged_turn_rewards(conversation, column=column, tag_hint=_info_file(data_args), where=where)
            continue
        value = record.get(column) if column else None
        own = _row_reward(value, column=column or tag, tagged=True, where=where)
        turn_rewards(conversation, own, dataset_attr=dataset_attr, where=where)


def _load_single_dataset(original):
    def load_single_dataset(dataset_attr, model_args, data_args, training_args):
        if config_of(data_args) is None:
            return original(dataset_attr, model_args, data_args, training_args)
        from datasets.exceptions import DatasetGenerationError

        name = getattr(dataset_attr, "rift_dataset_name", repr(dataset_attr))
        files = _local_files(dataset_attr, data_args)
        column = getattr(dataset_attr, "rift_reward_column", None)
        for path in files:  # the raw values, before `datasets` converts or chokes on them
            _check_json_turns(path, dataset_attr, data_args, column=column, dataset=name)
            if column and _reward_tag(dataset_attr) is None:
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


#: Turn tags stand in for token ids while the processor encodes a row a second time: ids <= this
#: (never a token id, never the label padding) mark the source (prompt) or target of each turn pair.
_TAG = -1000


class _TaggingTemplate:
    """A template whose turn pairs come back tagged: each token id replaced by its pair's tag.

    Everything but ``encode_multiturn`` is the template's own. The real pairs are kept in
    ``pairs``: LLaMA-Factory's truncation (``infer_seqlen``) and ``mask_history`` work on lengths
    and order only, so the tagged encoding has the real one's layout, token for token.
    """

    def __init__(self, template, pairs: list):
        self._template = template
        self._pairs = pairs

    def __getattr__(self, name):
        return getattr(self._template, name)

    def encode_multiturn(self, *args, **kwargs):
        real = self._template.encode_multiturn(*args, **kwargs)
        self._pairs.extend(real)
        return [([_TAG - 2 * j] * len(s), [_TAG - 2 * j - 1] * len(t)) for j, (s, t) in enumerate(real)]


def _encode_arguments(sample: dict) -> dict:
    """The arguments of ``SupervisedDatasetProcessor._encode_data_example`` for a one-sample batch (its own loop's)."""
    return {
        "prompt": sample["_prompt"][0],
        "response": sample["_response"][0],
        "system": sample["_system"][0],
        "tools": sample["_tools"][0],
        "images": sample["_images"][0] or [],
        "videos": sample["_videos"][0] or [],
        "audios": sample["_audios"][0] or [],
    }


def turn_token_rewards(processor, sample: dict, input_ids, labels, rewards, *, where: str) -> list[float]:
    """One reward per token of a processed row (aligned with ``input_ids``), each target token its turn's.

    The turn of each token is LLaMA-Factory's own: the processor encodes the sample again with
    tagged turn pairs (:class:`_TaggingTemplate`), so cutoff truncation, ``mask_history``'s order
    and template extras (``efficient_eos``) are what LLaMA-Factory did. A target token of pair j
    gets ``rewards[j]``; another trained token (an ``efficient_eos`` end of turn) the reward of
    the turn before it; untrained tokens 0. ``ValueError`` naming ``where`` when the two
    encodings disagree or the pairs are not the row's trained messages.
    """
    refuse = (
        f"the tokens of each assistant turn must be found in LLaMA-Factory's encoding of {where} to give them "
        "their turn's reward, got "
    )
    if not hasattr(processor, "_encode_data_example") or not hasattr(processor, "template"):
        raise ValueError(refuse + f"the dataset processor {type(processor).__name__}, which encodes no turn pairs")
    pairs: list = []
    tagger = copy.copy(processor)
    tagger.template = _TaggingTemplate(processor.template, pairs)
    tagged, tagged_labels = tagger._encode_data_example(**_encode_arguments(sample))
    if len(pairs) != len(rewards):
        raise ValueError(refuse + f"{len(pairs)} turn pairs for {len(rewards)} trained messages")
    if len(tagged) != len(input_ids) or len(tagged_labels) != len(labels):
        raise ValueError(refuse + f"{len(tagged)} tokens in the second encoding, {len(input_ids)} in the first")
    out, previous, start = [0.0] * len(input_ids), None, 0
    for p, (tag, real, label, tagged_label) in enumerate(zip(tagged, input_ids, labels, tagged_labels)):
        pair = None
        if tag <= _TAG:
            if p == 0 or tagged[p - 1] != tag:
                start = p
            pair, is_target = divmod(_TAG - tag, 2)
            ids = pairs[pair][is_target]
            if p - start >= len(ids) or ids[p - start] != real:
                raise ValueError(refuse + f"token {p} differs between two encodings of the same turns")
            if not is_target:
                pair = None
            else:
                previous = pair
        elif tag != real:
            raise ValueError(refuse + f"token {p} differs between two encodings of the same row")
        if (label == IGNORE_INDEX) != (tagged_label == IGNORE_INDEX):
            raise ValueError(refuse + f"token {p} trained in one encoding and not in the other")
        if label == IGNORE_INDEX:
            continue
        turn = pair if pair is not None else previous
        if turn is None:
            raise ValueError(refuse + f"trained token {p} before any assistant turn")
        out[p] = float(rewards[turn])
    return out


class RewardCarryingProcessor:
    """LLaMA-Factory's dataset processor, run one sample at a time so rewards follow samples.

    The processor emits zero rows for a sample it drops (malformed turns) and one row
    otherwise; the reward (and group) of exactly that sample is appended to each row it
    emitted. Same work as the processor's own loop, which is per sample anyway. When some row
    of the run has per-turn rewards (``data_args.rift_turns``), every row also gets one reward
    per token (:func:`turn_token_rewards`; a row without per-turn rewards: its reward on every
    token) and its turn rewards.
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
        turns, wheres = examples.get(TURNS_IN), examples.get(WHERE_IN)
        per_token = bool(getattr(getattr(self.inner, "data_args", None), "rift_turns", False))
        out: dict = {}
        for i in range(len(rewards)):
            sample = {k: v[i : i + 1] for k, v in examples.items()}
            rows = self.inner.preprocess_dataset(sample)
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
            if per_token:
                ids, own = rows["input_ids"][0], turns[i] if turns is not None else None
                if own is None:
                    token_rewards, own = [float(rewards[i])] * len(ids), [float(rewards[i])]
                else:
                    where = wheres[i] if wheres is not None else f"sample {i}"
                    token_rewards = turn_token_rewards(self.inner, sample, ids, rows["labels"][0], own, where=where)
                out.setdefault(TOKEN_REWARDS, []).append(token_rewards)
                out.setdefault(TURNS, []).append([float(r) for r in own])
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
        name = getattr(self, "dataset_name", "?")
        # LLaMA-Factory reads the tags it knows and ignores the rest: a misspelt one is refused, not dropped.
        known = [f.name for f in dataclasses.fields(type(self)) if f.name.endswith("_tag") and f.name != "kto_tag"]
        for key in tags:
            one_of(f"each key of tags (dataset file {name!r})", key, [*known, "reward_tag"])
        self.rift_reward_tag = tags.get("reward_tag")
        if self.rift_reward_tag is not None and (
            not isinstance(self.rift_reward_tag, str) or self.formatting != "sharegpt"
        ):
            raise ValueError(
                f"tags.reward_tag must name the messages' reward key of a sharegpt dataset, got "
                f"{self.rift_reward_tag!r} for dataset file {name!r} with formatting {self.formatting!r}: per-turn "
                'rewards are read from "formatting": "sharegpt" datasets'
            )
        if self.rift_reward_tag is not None:
            unset = [t for t in ("role_tag", "content_tag", "assistant_tag") if getattr(self, t, None) is None]
            if unset:
                raise ValueError(
                    f"tags must give {', '.join(unset)} beside reward_tag for dataset file {name!r}, got none: "
                    'LLaMA-Factory sets each tag that a "tags" object leaves out to null (write them all, e.g. '
                    '"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt")'
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
    if TURNS in dataset.column_names:  # per-turn rewards: each row's tokens carry their own
        turns = list(dataset[TURNS])
        option = _per_row_option(config)
        if option:
            fix = f"use rift_reward_normalization: none and rift_level: token, or another {source}"
            raise ValueError(per_row_only(option, column="reward", dataset=split, fix=fix))
        rewards = raw = [r for row in turns for r in row]
        dataset = dataset.remove_columns(TURNS)
        note = f" of {len(turns)} rows and their assistant turns"
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
