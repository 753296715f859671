"""Activation: ``SwiftSft`` checks a RIFT ``--loss_type`` right after the arguments are parsed.

``SwiftSft._prepare_model_tokenizer`` (before the model loads) refuses a misspelt RIFT
``--loss_type``, reads the knobs, refuses unsupported options (:mod:`.config`), checks the raw
rewards of local JSON / JSONL datasets (:func:`._datasets.check_local_rewards`, per-turn rewards
included) and installs the trainer patches; the run is kept on the pipeline instance.
``SwiftSft._prepare_dataset`` runs with the pipeline current (:func:`._state.preparing`), so the
dataset patches see its run; then a pre-flight check raises the first per-turn row whose rewards
could not be put on its tokens, and a collation of one encoded sample proves the reward reaches
the batch before the first step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .._core.patching import wrap
from . import config
from ._datasets import check_local_rewards
from ._state import HOST, KEY, RUN_ATTR, Pipeline, Run, logger, preparing
from ._trainer import install_trainer_patches
from ._turns import ERROR_KEY


def activate(pipeline) -> Run | None:
    """Check a ``SwiftSft`` pipeline's arguments; for a RIFT ``--loss_type`` keep its run on the pipeline and return it.

    ``pipeline`` is the ``SwiftSft`` instance (its ``args`` are read); the run is kept as its
    :data:`RUN_ATTR` attribute, so each stage of the pipeline that re-checks finds it.
    """
    args = pipeline.args
    loss_type = getattr(args, "loss_type", None)
    if not isinstance(loss_type, str) or loss_type not in config.LOSS_TYPES:
        if not getattr(args, "rlhf_type", None):  # RLHF trainers have their own loss names
            from swift.loss import loss_map

            config.check_loss_type(loss_type, loss_map)
        setattr(pipeline, RUN_ATTR, None)
        return None
    config.raise_registration_errors()
    knobs = config.read_knobs()
    config.check_args(args, knobs)
    install_trainer_patches()
    core_loss, normalization = config.LOSS_TYPES[loss_type]
    run = Run(loss_type, core_loss, normalization, knobs)
    if run == getattr(pipeline, RUN_ATTR, None):  # activated earlier in this pipeline (each stage re-checks)
        return run
    check_local_rewards(args, run)
    setattr(pipeline, RUN_ATTR, run)
    if knobs.group_column_given and not normalization:
        logger().warning(
            f"rift-losses: {config.ENV_GROUP_COLUMN}={knobs.group_column} has no effect with --loss_type {loss_type}: "
            f"only {', '.join(n for n, (_, m) in config.LOSS_TYPES.items() if m)} group rewards"
        )
    logger().info(
        f"rift-losses: --loss_type {loss_type} ({core_loss} loss"
        + (f" on rewards normalized by {normalization} over whole groups" if normalization else "")
        + f", level {knobs.level}); rewards from column {knobs.reward_column!r}"
        + (f", groups from column {knobs.group_column!r} or else the prompt" if normalization else "")
    )
    return run


@contextmanager
def pipeline_datasets(pipeline) -> Iterator[Run | None]:
    """Activate ``pipeline`` and make it the current one while its datasets load (see :func:`._state.preparing`)."""
    run = activate(pipeline)
    with preparing(Pipeline(pipeline.args, run)):
        yield run


def preflight(template, datasets, *, run: Run, predict_with_generate: bool = False) -> None:
    """Collate one encoded sample of each dataset and check its rewards reached the batch."""
    for which, dataset in zip(("training", "validation"), datasets):
        if dataset is None or (which == "validation" and predict_with_generate):
            continue
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__") or len(dataset) == 0:
            continue
        _raise_turn_errors(dataset)
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


def _raise_turn_errors(dataset) -> None:
    """The first per-turn row whose rewards could not be put on its tokens (an encoded dataset's column)."""
    names = getattr(dataset, "column_names", None)
    if not names or ERROR_KEY not in names:
        return  # not encoded ahead (lazy_tokenize, packing): the collator raises the same error
    error = next((e for e in dataset[ERROR_KEY] if e), None)
    if error:
        raise ValueError(error)


def install_pipeline_patches() -> None:
    """Wrap ``SwiftSft._prepare_model_tokenizer`` and ``SwiftSft._prepare_dataset`` (idempotent)."""
    from swift.pipelines.train.sft import SwiftSft

    def make_prepare_model(original):
        def _prepare_model_tokenizer(self, *args, **kwargs):
            activate(self)
            return original(self, *args, **kwargs)

        return _prepare_model_tokenizer

    def make_prepare_dataset(original):
        def _prepare_dataset(self, *args, **kwargs):
            with pipeline_datasets(self) as run:
                datasets = original(self, *args, **kwargs)
            if run is not None:
                preflight(
                    self.template,
                    datasets,
                    run=run,
                    predict_with_generate=getattr(self.args, "predict_with_generate", False),
                )
            return datasets

        return _prepare_dataset

    wrap(SwiftSft, "_prepare_model_tokenizer", make_prepare_model, host=HOST)
    wrap(SwiftSft, "_prepare_dataset", make_prepare_dataset, host=HOST)
