"""How a row's reward travels through MS-Swift 4.x to the RIFT loss (imported once MS-Swift is).

MS-Swift drops unknown dataset columns, and its loss callback never sees the batch. Each
patch below wraps one MS-Swift function, is idempotent, and changes nothing unless a RIFT
``--loss_type`` is active or a row carries the private ``_rift_reward`` key that only an
active run writes:

1. ``SwiftSft._prepare_model_tokenizer`` (right after the arguments are parsed, before the
   model loads): activation. Refuses a misspelt RIFT ``--loss_type``, reads the knobs, refuses
   unsupported options (:mod:`.config`), and checks the raw rewards of local JSON / JSONL
   datasets (every value a JSON number; ``datasets`` would turn a string ``"1.0"`` into 1.0).
2. ``DatasetLoader.load`` / ``RowPreprocessor.__call__`` / ``RowPreprocessor.remove_useless_columns``:
   keep the reward (and group) column, validate every raw row (the first bad one is named),
   normalize over whole groups for the normalized variants, and store the result as the
   ``_rift_reward`` column; warn loudly when they are all 0 (the run would train nothing on
   that dataset). In a run whose loss ignores rewards, warn loudly about rewards < 0.
3. ``Template.encode``: copy ``_rift_reward`` from the row to the encoded sample.
4. ``Template.data_collator``: ``(B,)`` rewards for padded batches, ``(1, T)`` per-token rewards
   for ``padding_free``/``packing`` (which rebuild the batch from a fixed set of keys).
5. ``SwiftSft._prepare_dataset``: a pre-flight collation of one encoded sample proves the reward
   reaches the batch before the first step.
6. ``Seq2SeqTrainer.prepare_logits_to_keep``: trims per-token rewards exactly like the labels.
   ``Seq2SeqTrainer.compute_loss``: moves the batch's rewards out of the model inputs onto the
   trainer, where the loss reads them. ``Seq2SeqTrainer._get_num_items_in_batch``: counts the
   responses of the optimizer step for ``RIFT_LEVEL=sequence``.
7. ``BaseArguments.save_args``: keeps this package's plugin file out of ``args.json`` (an
   absolute path there breaks ``swift infer``/``export`` on another machine).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

from .. import _common
from . import config

#: The private column / encoded-sample / batch key that carries each row's (normalized) reward.
KEY = "_rift_reward"
#: A string every copy of this package's ``--external_plugins`` file contains.
PLUGIN_MARKER = "__rift_losses_swift_plugin__"
_WRAPPED = "__rift_wrapped__"


@dataclass
class Run:
    """An active RIFT run: its loss type, core loss, normalization and knobs."""

    loss_type: str
    core_loss: str
    normalization: str | None
    knobs: config.Knobs


class _State:
    args: Any = None  # the SftArguments of this process's training pipeline (RIFT or not)
    run: Run | None = None  # set when --loss_type is a RIFT loss
    loading: dict | None = None  # the dataset being loaded: {"name": ..., "raw_checked": bool}


STATE = _State()


def _logger():
    from swift.utils import get_logger

    return get_logger()


def _wrap(owner: type, name: str, make, *, static: bool = False) -> None:
    """Replace ``owner.name`` by ``make(original)`` once (idempotent)."""
    original = getattr(owner, name)
    if getattr(original, _WRAPPED, False):
        return
    wrapper = make(original)
    functools.update_wrapper(wrapper, original)
    setattr(wrapper, _WRAPPED, True)
    setattr(owner, name, staticmethod(wrapper) if static else wrapper)


# --- activation -------------------------------------------------------------------------


def activate(args) -> Run | None:
    """Record this pipeline's arguments; for a RIFT ``--loss_type`` check them and return the run."""
    STATE.args = args
    loss_type = getattr(args, "loss_type", None)
    if not isinstance(loss_type, str) or loss_type not in config.LOSS_TYPES:
        if not getattr(args, "rlhf_type", None):  # RLHF trainers have their own loss names
            from swift.loss import loss_map

            config.check_loss_type(loss_type, loss_map)
        STATE.run = None
        return None
    config.raise_registration_errors()
    knobs = config.read_knobs()
    config.check_args(args, knobs)
    install_trainer_patches()
    core_loss, normalization = config.LOSS_TYPES[loss_type]
    run = Run(loss_type, core_loss, normalization, knobs)
    if run == STATE.run:  # activated earlier in this pipeline (each stage re-checks)
        return run
    STATE.run = run
    check_local_rewards(args, run)
    if knobs.group_column_given and not normalization:
        _logger().warning(
            f"rift-losses: {config.ENV_GROUP_COLUMN}={knobs.group_column} has no effect with --loss_type {loss_type}: "
            f"only {', '.join(n for n, (_, m) in config.LOSS_TYPES.items() if m)} group rewards"
        )
    _logger().info(
        f"rift-losses: --loss_type {loss_type} ({core_loss} loss"
        + (f" on rewards normalized by {normalization} over whole groups" if normalization else "")
        + f", level {knobs.level}); rewards from column {knobs.reward_column!r}"
        + (f", groups from column {knobs.group_column!r} or else the prompt" if normalization else "")
    )
    return STATE.run


# --- datasets ---------------------------------------------------------------------------


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
            _common.check_json_rewards(syntax.dataset, column=column, dataset=syntax.dataset)


def _check_raw_rewards(dataset, *, name: str, run: Run) -> None:
    """Validate the reward column of a dataset as read from its file (rows in file order)."""
    column = run.knobs.reward_column
    features = getattr(dataset, "features", None) or {}
    if column not in features:
        raise ValueError(
            f"dataset {name!r} must have a {column!r} column with one reward per row for --loss_type "
            f"{run.loss_type}, got columns {sorted(features)} (name yours with {config.ENV_REWARD_COLUMN}=...)"
        )
    if type(features[column]).__name__ == "Json":  # datasets 4.x: values of several JSON types
        raise ValueError(
            f"{column} must be a JSON number in every row of dataset {name!r} for --loss_type {run.loss_type}, got a "
            "column that mixes JSON types (numbers with strings or bools), which `datasets` loads turning a string "
            "\"1.0\" into the number 1.0; write every reward as a number"
        )
    _common.read_rewards(dataset[column], column=column, dataset=name)
    group = run.knobs.group_column
    if run.normalization and run.knobs.group_column_given and group not in features:
        raise ValueError(
            f"dataset {name!r} must have the {group!r} column that {config.ENV_GROUP_COLUMN} names for --loss_type "
            f"{run.loss_type}, got columns {sorted(features)} (unset {config.ENV_GROUP_COLUMN} to group rows by their prompt)"
        )
    if run.normalization and group in features:
        if type(features[group]).__name__ == "Json":  # e.g. 1 and "1": `datasets` 4.x reads both as 1
            raise ValueError(
                f"{group} must hold one JSON type (all strings or all numbers) in dataset {name!r} for --loss_type "
                f"{run.loss_type}, got a column that mixes them, which `datasets` loads turning a string \"1\" into "
                "the number 1 (two groups would become one)"
            )
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
    extras = [c for c in ("tools", "images", "videos", "audios") if c in dataset.column_names]
    extra_values = {c: dataset[c] for c in extras}
    keys = []
    for i, messages in enumerate(dataset["messages"]):
        extra = {c: extra_values[c][i] for c in extras if extra_values[c][i]}
        try:
            keys.append(_common.prompt_key(messages, extra or None))
        except ValueError as exc:
            raise ValueError(f"{exc} in row {i} of dataset {name!r} (after MS-Swift's preprocessing)") from None
    return keys, "the prompt (every message before the last assistant turn)"


def prepare_rewards(dataset, *, name: str, run: Run, remove_unused_columns: bool = True):
    """The loaded dataset with its validated (and, if asked, normalized) rewards in column ``KEY``."""
    from datasets import Dataset as HfDataset

    if not isinstance(dataset, HfDataset):
        raise ValueError(f"dataset {name!r} must be a map-style dataset for --loss_type {run.loss_type}, got {type(dataset).__name__}")
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
    summary = (f"{sum(r > 0 for r in rewards)} > 0, {sum(r < 0 for r in rewards)} < 0, "
               f"{sum(r == 0 for r in rewards)} = 0")
    raw, groups = rewards, None
    if run.normalization:
        keys, by = _group_keys(dataset, name=name, run=run)
        rewards = _common.normalize_dataset_rewards(rewards, keys, method=run.normalization)
        groups = len(set(keys))
        summary += f"; normalized by {run.normalization} within {groups} groups (by {by})"
    hint = (f"Give each group several responses with different rewards ({config.ENV_GROUP_COLUMN}, or the prompt), "
            f"or train on the raw rewards (--loss_type {config.PLAIN_LOSS_TYPE})." if run.normalization and any(raw)
            else f"Check the {column!r} column: the responses must be graded (+1.0 right, -0.2 wrong in the paper).")
    warning = _common.zero_rewards_warning(rewards, raw, dataset=name, column=column, normalization=run.normalization,
                                           groups=groups, hint=hint)
    if warning:
        _logger().warning(warning)
    drop = [c for c in (KEY,) if c in dataset.column_names]
    if remove_unused_columns:
        drop += [c for c in (column, run.knobs.group_column) if c in dataset.column_names]
    if drop:
        dataset = dataset.remove_columns(drop)
    dataset = dataset.add_column(KEY, rewards)
    _logger().info(f"rift-losses: dataset {name!r}: {len(rewards)} rows with rewards ({summary})")
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
        hint = (f"Train with --loss_type {' / '.join(config.LOSS_TYPES)} to use the rewards, "
                "or drop the rows with negative rewards (RFT).")
        _logger().warning(_common.negative_reward_warning(
            dataset=name, column=column, negatives=negatives, rows=numbers, loss=loss, hint=hint))


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
                dataset = prepare_rewards(dataset, name=name, run=STATE.run,
                                          remove_unused_columns=getattr(self, "remove_unused_columns", True))
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
                    _logger().warning(f"rift-losses: could not check the rewards for negative values: {exc!r}")
                return original(dataset)
            keep = [c for c in (run.knobs.reward_column, run.knobs.group_column)
                    if c in (getattr(dataset, "features", None) or {})]
            if not keep:
                return original(dataset)
            from swift.dataset.preprocessor.core import RowPreprocessor as _RP

            standard = _RP.standard_keys
            _RP.standard_keys = standard + [c for c in keep if c not in standard]
            try:
                return original(dataset)
            finally:
                _RP.standard_keys = standard

        return remove_useless_columns

    _wrap(DatasetLoader, "load", make_load)
    _wrap(RowPreprocessor, "__call__", make_call)
    _wrap(RowPreprocessor, "remove_useless_columns", make_remove, static=True)


# --- template: encode and collate ---------------------------------------------------------


def _row_reward(inputs) -> Any:
    if isinstance(inputs, dict):
        return inputs.get(KEY)
    chosen = getattr(inputs, "chosen", None)
    extra = getattr(chosen, "extra_kwargs", None)
    return extra.get(KEY) if isinstance(extra, dict) else None


def collate_rewards(template, rows: list, res: dict):
    """The batch's reward tensor for the collated ``res`` of encoded ``rows`` (see module doc)."""
    import torch

    rewards, lengths = [], []
    for i, row in enumerate(rows):
        value = row.get(KEY) if isinstance(row, dict) else None
        if value is None:
            raise ValueError(
                f"every sample of a RIFT batch must carry a reward, got none in sample {i} of {len(rows)}: "
                "a dataset without rewards is mixed into a RIFT run"
            )
        rewards.append(float(value))
        lengths.append(len(row["input_ids"]))
    labels = res.get("labels")
    if getattr(template, "padding_free", False):
        tokens = _common.per_token_rewards(rewards, lengths)
        width = labels.shape[-1] if labels is not None else len(tokens)
        if width < len(tokens):
            raise ValueError(f"packed labels must cover every token of the packed samples, got {width} labels for {len(tokens)} tokens")
        padding = [0.0] * (width - len(tokens))  # padding_to (MS-Swift pads packed rows on the padding side)
        tokens = tokens + padding if getattr(template, "padding_side", "right") == "right" else padding + tokens
        return torch.tensor(tokens, dtype=torch.float32)[None]
    if labels is not None and labels.shape[0] != len(rewards):
        raise ValueError(f"the collated batch must have one row per sample, got {labels.shape[0]} rows for {len(rewards)} samples")
    return torch.tensor(rewards, dtype=torch.float32)


def install_template_patches() -> None:
    from swift.template.base import Template

    def make_encode(original):
        def encode(self, inputs, *args, **kwargs):
            encoded = original(self, inputs, *args, **kwargs)
            reward = _row_reward(inputs)
            if reward is not None:
                for sample in encoded if isinstance(encoded, (list, tuple)) else (encoded,):
                    if isinstance(sample, dict):
                        sample[KEY] = reward
            return encoded

        return encode

    def make_collator(original):
        def data_collator(self, batch, *args, **kwargs):
            rows = batch
            if batch and isinstance(batch[0], list):  # packing: lists of samples
                rows = [sample for pack in batch for sample in pack]
            if not any(isinstance(row, dict) and KEY in row for row in rows):
                return original(self, batch, *args, **kwargs)
            rows = list(rows)
            res = original(self, batch, *args, **kwargs)
            res[KEY] = collate_rewards(self, rows, res)
            return res

        return data_collator

    _wrap(Template, "encode", make_encode)
    _wrap(Template, "data_collator", make_collator)


# --- pipeline -------------------------------------------------------------------------------


def preflight(template, datasets, *, run: Run, predict_with_generate: bool = False) -> None:
    """Collate one encoded sample of each dataset and check its rewards reached the batch."""
    for which, dataset in zip(("training", "validation"), datasets):
        if dataset is None or (which == "validation" and predict_with_generate):
            continue
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__") or len(dataset) == 0:
            continue
        batch = template.data_collator([dataset[0]])
        rewards, labels = batch.get(KEY), batch.get("labels")
        if rewards is None or labels is None or rewards.shape not in (labels.shape[:1], labels.shape):
            raise RuntimeError(
                f"rift-losses: the rewards of the {which} dataset do not reach MS-Swift's batches with template "
                f"{type(template).__name__} (collated keys: {sorted(batch)}); this template's collator is not supported"
            )
        if run.knobs.level == "sequence" and batch.get("loss_scale") is not None:
            raise ValueError(
                f"{config.ENV_LEVEL}=sequence cannot be combined with MS-Swift's per-token loss_scale "
                "(--loss_scale with non-binary weights): a response-level term has no per-token weight"
            )


def _is_our_plugin(path: str) -> bool:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            return PLUGIN_MARKER in f.read(65536)
    except OSError:
        return False


def install_pipeline_patches() -> None:
    from swift.arguments import BaseArguments
    from swift.pipelines.train.sft import SwiftSft

    install_dataset_patches()

    def make_prepare_model(original):
        def _prepare_model_tokenizer(self, *args, **kwargs):
            activate(self.args)
            return original(self, *args, **kwargs)

        return _prepare_model_tokenizer

    def make_prepare_dataset(original):
        def _prepare_dataset(self, *args, **kwargs):
            run = activate(self.args)
            datasets = original(self, *args, **kwargs)
            if run is not None:
                preflight(self.template, datasets, run=run,
                          predict_with_generate=getattr(self.args, "predict_with_generate", False))
            return datasets

        return _prepare_dataset

    def make_save_args(original):
        def save_args(self, *args, **kwargs):
            plugins = getattr(self, "external_plugins", None)
            ours = [p for p in plugins or [] if _is_our_plugin(p)]
            if not ours:
                return original(self, *args, **kwargs)
            self.external_plugins = [p for p in plugins if p not in ours]
            _logger().info(
                f"rift-losses: args.json leaves out external_plugins {ours}: inference does not need the RIFT "
                "losses, and an absolute path there breaks `swift infer`/`swift export` where it does not exist"
            )
            try:
                return original(self, *args, **kwargs)
            finally:
                self.external_plugins = plugins

        return save_args

    _wrap(SwiftSft, "_prepare_model_tokenizer", make_prepare_model)
    _wrap(SwiftSft, "_prepare_dataset", make_prepare_dataset)
    _wrap(BaseArguments, "save_args", make_save_args)


# --- trainer ----------------------------------------------------------------------------------


def install_trainer_patches() -> None:
    import torch
    import torch.nn.functional as F
    from swift.trainers.seq2seq_trainer import Seq2SeqTrainer

    from .loss import NUM_SEQUENCES_ATTR, REWARDS_ATTR

    def make_prepare_logits_to_keep(original):
        def prepare_logits_to_keep(self, inputs):
            rewards = inputs.get(KEY)
            if not isinstance(rewards, torch.Tensor) or rewards.dim() != 2:
                return original(self, inputs)  # per-sample rewards keep their batch dimension
            labels = inputs["labels"]
            original(self, inputs)
            keep = inputs.get("logits_to_keep")
            if isinstance(keep, torch.Tensor) and keep.dtype == torch.bool:  # one row, positions kept by mask
                rewards = F.pad(rewards[:, (labels != -100)[0]], (1, 0), value=0.0)
            elif isinstance(keep, int) and keep > 0:  # a suffix of every row
                rewards = rewards[:, -keep:]
            if rewards.shape != inputs["labels"].shape:
                raise RuntimeError(
                    f"per-token rewards must follow the labels through logits_to_keep, got rewards "
                    f"{tuple(rewards.shape)} for labels {tuple(inputs['labels'].shape)}"
                )
            inputs[KEY] = rewards

        return prepare_logits_to_keep

    def make_compute_loss(original):
        def compute_loss(self, model, inputs, *args, **kwargs):
            rewards = inputs.pop(KEY, None) if isinstance(inputs, dict) else None
            if rewards is None:
                return original(self, model, inputs, *args, **kwargs)
            if not getattr(self.compute_loss_func, "is_rift_loss", False):
                raise RuntimeError(
                    f"the batch carries rewards but the loss ({self.compute_loss_func!r}) does not use them"
                )
            setattr(self, REWARDS_ATTR, rewards)
            try:
                return original(self, model, inputs, *args, **kwargs)
            finally:
                setattr(self, REWARDS_ATTR, None)

        return compute_loss

    def make_num_items(original):
        def _get_num_items_in_batch(self, batch_samples, device):
            count = original(self, batch_samples, device)
            loss = getattr(self, "compute_loss_func", None)
            if count is not None and getattr(loss, "is_rift_loss", False) and loss.level == "sequence":
                sequences = sum((b["labels"][..., 1:] != -100).any(-1).sum().to(device) for b in batch_samples)
                if getattr(self.args, "average_tokens_across_devices", False) and self.args.world_size > 1:
                    sequences = self.accelerator.gather(sequences).sum()
                setattr(self, NUM_SEQUENCES_ATTR, sequences)
            return count

        return _get_num_items_in_batch

    _wrap(Seq2SeqTrainer, "prepare_logits_to_keep", make_prepare_logits_to_keep)
    _wrap(Seq2SeqTrainer, "compute_loss", make_compute_loss)
    if hasattr(Seq2SeqTrainer, "_get_num_items_in_batch"):
        _wrap(Seq2SeqTrainer, "_get_num_items_in_batch", make_num_items)
