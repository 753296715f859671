"""TRL adapter: RIFT in TRL 1.16's ``SFTTrainer``, on TRL's fused LM head.

Switching a TRL script to RIFT is swapping two class names and adding a reward column::

    from rift_losses.integrations.trl import RiftSFTConfig, RiftSFTTrainer

    args = RiftSFTConfig(output_dir="out", loss_type="rift")   # or rift_naive, rift_gaussian, ...
    trainer = RiftSFTTrainer(model="Qwen/Qwen2.5-0.5B", args=args, train_dataset=rows)  # rows carry "reward"
    trainer.train()

- :mod:`.config`: :class:`RiftSFTConfig` (``loss_type`` also takes the RIFT names, built from the
  core's registry by ``_common.loss_variants()``; ``rift_level``, ``reward_column``,
  ``group_column``, ``rift_inplace_grad``); refuses what cannot work with a reward loss before
  anything loads (packing, label smoothing, Liger's fused linear cross-entropy, ...).
- :mod:`.trainer`: :class:`RiftSFTTrainer`: rewards validated (and normalized over whole
  dataset groups) before the model loads, carried by the collator to ``compute_loss``, where
  the loss is the core's :func:`rift_losses.logprob_loss` over TRL's fused per-token log-probs.
- :mod:`.grpo`: :class:`RiftGRPOConfig` and :class:`RiftGRPOTrainer`: online RIFT in TRL's
  ``GRPOTrainer`` (``loss_type="rift"``; rewards from the reward functions, normalized per prompt group).
- :mod:`._autoload` and :mod:`.launcher`: ``trl sft --config cfg.yaml`` with ``loss_type: rift``
  (zero-flag ``.pth`` hook), and ``rift-trl sft ...`` for sites that refuse ``.pth`` code.

Importing this package imports neither TRL nor torch; the two classes load TRL on first use.
"""

from __future__ import annotations

__all__ = ["RiftGRPOConfig", "RiftGRPOTrainer", "RiftSFTConfig", "RiftSFTTrainer"]


def __getattr__(name):
    if name == "RiftSFTConfig":
        from .config import RiftSFTConfig

        return RiftSFTConfig
    if name == "RiftSFTTrainer":
        from .trainer import RiftSFTTrainer

        return RiftSFTTrainer
    if name in ("RiftGRPOConfig", "RiftGRPOTrainer"):
        from . import grpo

        return getattr(grpo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
