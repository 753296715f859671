"""Activation: ``SwiftSft`` checks a RIFT ``--loss_type`` right after the arguments are parsed.

``SwiftSft._prepare_model_tokenizer`` (before the model loads) refuses a misspelt RIFT
``--loss_type``, reads the knobs, refuses unsupported options (:mod:`.config`), checks the raw
rewards of local JSON / JSONL datasets (:func:`._datasets.check_local_rewards`) and installs
the trainer patches. ``SwiftSft._prepare_dataset``: a pre-flight collation of one encoded
sample proves the reward reaches the batch before the first step.
"""

from __future__ import annotations

from .._core.patching import wrap
from . import config
from ._datasets import check_local_rewards
from ._state import HOST, KEY, STATE, Run, logger
from ._trainer import install_trainer_patches


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
    return STATE.run


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


def install_pipeline_patches() -> None:
    """Wrap ``SwiftSft._prepare_model_tokenizer`` and ``SwiftSft._prepare_dataset`` (idempotent)."""
    from swift.pipelines.train.sft import SwiftSft

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
