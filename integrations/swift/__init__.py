"""MS-Swift adapter: ``swift sft --loss_type rift`` on a dataset whose rows carry a ``reward``.

Registered loss types (built from the core's LOSSES and NORMALIZATIONS): ``rift`` (eq. 5),
``rift_naive`` (eq. 1), ``rift_gaussian``, ``rift_gpg_mean``, ``rift_gpg_scaled`` (eq. 5 on
rewards normalized over whole groups of the dataset, eq. 6-8). Registration is automatic
through the ``rift_losses.pth`` import hook (opt out: ``RIFT_LOSSES_AUTOLOAD=0``), or explicit
with ``--external_plugins "$(python -m rift_losses.integrations.swift)"``. Knobs: environment
variables ``RIFT_REWARD_COLUMN``, ``RIFT_GROUP_COLUMN``, ``RIFT_LEVEL`` (see :mod:`.config`).

Importing this package imports neither MS-Swift nor anything of it; :func:`install` does.
"""

from __future__ import annotations

import os


def plugin_path() -> str:
    """The absolute path of the ``--external_plugins`` file (:mod:`.plugin`)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugin.py")


def install() -> None:
    """Register the loss types and install every patch now (MS-Swift must be importable)."""
    from . import _autoload

    _autoload.register()
    _autoload.patch_template()
    _autoload.patch_pipeline()


__all__ = ["install", "plugin_path"]
