"""Registration with TRL's ``trl sft`` command (called by ``_rift_losses_hook``), and its explicit form.

``trl sft --config cfg.yaml`` runs in two processes: the ``trl`` CLI parses the arguments
(importing ``trl.scripts.sft``), then ``accelerate launch`` runs ``trl/scripts/sft.py`` as a
script, whose ``make_parser``/``main`` look ``SFTConfig`` and ``SFTTrainer`` up on the ``trl``
package when they run. In those processes only, :func:`register` points the ``trl`` package's
``SFTConfig`` and ``SFTTrainer`` at :class:`.config.RiftSFTConfig` and
:class:`.trainer.RiftSFTTrainer` (identical to TRL's for ``loss_type: nll``/``dft``), so a YAML
with ``loss_type: rift`` and the ``rift_*``/``*_column`` keys parses and trains RIFT. Any other
process that imports TRL (a user's own script, MS-Swift) is left alone: the hook compares
the ``__main__`` script's path before importing anything of rift-losses.

``trl grpo --config cfg.yaml`` works the same way: in the processes that parse it (``trl.scripts.grpo``
imported) or run ``trl/scripts/grpo.py``, :func:`install_grpo` points ``trl.GRPOConfig`` and
``trl.GRPOTrainer`` at :class:`.grpo.RiftGRPOConfig` and :class:`.grpo.RiftGRPOTrainer` (identical
to TRL's for TRL's own loss types), so ``loss_type: rift`` parses and trains online RIFT.

A misspelt key is refused in the CLI process, before anything launches (see :func:`check_config`).
"""

from __future__ import annotations

import os
import sys

_REGISTERED = "_rift_losses_registered"


def register_script() -> None:
    """Trigger ``trl``, in a process that runs TRL's ``sft.py`` or ``grpo.py`` as its script (the hook checks that)."""
    main = getattr(sys.modules.get("__main__"), "__file__", None) or ""
    if os.path.basename(main) == "grpo.py":
        install_grpo()
    else:
        install()


def register_grpo_cli() -> None:
    """Trigger ``trl.scripts.grpo`` (imported by ``trl grpo``): register in the parsing process."""
    install_grpo()


def register_cli() -> None:
    """Trigger ``trl.scripts.sft`` (imported by ``trl sft``): register in the parsing process."""
    install()


def install() -> None:
    """Point ``trl.SFTConfig``/``trl.SFTTrainer`` at the RIFT subclasses in this process (idempotent)."""
    import trl

    if getattr(trl, _REGISTERED, False):
        return
    from rift_losses.integrations.trl.config import RiftSFTConfig
    from rift_losses.integrations.trl.trainer import RiftSFTTrainer

    trl.SFTConfig = RiftSFTConfig
    trl.SFTTrainer = RiftSFTTrainer
    setattr(trl, _REGISTERED, True)


_REGISTERED_GRPO = "_rift_losses_grpo_registered"


def install_grpo() -> None:
    """Point ``trl.GRPOConfig``/``trl.GRPOTrainer`` at the online-RIFT subclasses in this process (idempotent)."""
    import trl

    if getattr(trl, _REGISTERED_GRPO, False):
        return
    from rift_losses.integrations.trl.grpo import RiftGRPOConfig, RiftGRPOTrainer

    trl.GRPOConfig = RiftGRPOConfig
    trl.GRPOTrainer = RiftGRPOTrainer
    setattr(trl, _REGISTERED_GRPO, True)
