"""Entry points of the zero-flag registration (called by ``_rift_losses_hook``, see its HOOKS).

Each function runs right after its MS-Swift trigger module has been imported, in every
process (``swift sft`` re-executes itself and runs under torchrun):

- ``swift.loss`` -> :func:`register`: the RIFT loss types in ``loss_map``.
- ``swift.template.base`` -> :func:`patch_template`: rewards from the row to the batch (also in
  dataloader workers started with spawn/forkserver, which import the template but not the pipeline).
- ``swift.pipelines.train.sft`` -> :func:`patch_pipeline`: activation, datasets, args.json.

The hook keeps any exception in ``_rift_losses_hook.errors`` (MS-Swift itself keeps working);
a RIFT run re-raises it (:func:`config.raise_registration_errors`).
"""

from __future__ import annotations

from .._core import hook


def _succeeded(trigger: str) -> None:
    """Forget an earlier failure of ``trigger``'s registration once a later one succeeded."""
    hook.forget(trigger)


def register() -> None:
    """Put the RIFT loss types in ``swift.loss.loss_map``; on failure, loud placeholders."""
    try:
        # Import the host module first: if it was not imported yet, the hook runs this function
        # for it right then (idempotent), instead of in the middle of importing .loss.
        import swift.loss  # noqa: F401

        from .loss import register_loss_types

        register_loss_types()
    except Exception as exc:
        _register_placeholders(exc)
        raise
    _succeeded("swift.loss")


def patch_template() -> None:
    import swift.template.base  # noqa: F401  (see register)

    from ._template import install_template_patches

    install_template_patches()
    _succeeded("swift.template.base")


def patch_pipeline() -> None:
    import swift.pipelines.train.sft  # noqa: F401  (see register)

    from ._activation import install_pipeline_patches
    from ._args_json import install_args_json_patch
    from ._datasets import install_dataset_patches

    install_dataset_patches()
    install_pipeline_patches()
    install_args_json_patch()
    _succeeded("swift.pipelines.train.sft")


def _register_placeholders(error: BaseException) -> None:
    """Loss types that raise ``error`` when used, so ``--loss_type rift`` fails with the cause."""
    from swift.loss import BaseLoss, loss_map

    try:
        from .config import LOSS_TYPES

        names = list(LOSS_TYPES)
    except Exception:  # the core itself is broken: the names come from it, so only the main one
        names = ["rift"]

    class BrokenRiftLoss(BaseLoss):
        is_rift_placeholder = True

        def __init__(self, args, trainer):
            raise RuntimeError(
                f"rift-losses failed to register its MS-Swift loss types: {type(error).__name__}: {error}"
            ) from error

        def __call__(self, *args, **kwargs):  # pragma: no cover - __init__ always raises
            raise NotImplementedError

    for name in names:
        loss_map.setdefault(name, BrokenRiftLoss)
