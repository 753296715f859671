"""The state of one MS-Swift training pipeline in this process, and the key that carries rewards.

The adapter's patches (:mod:`._activation`, :mod:`._datasets`, :mod:`._template`, :mod:`._trainer`,
:mod:`._args_json`) change nothing unless :data:`STATE` holds an active RIFT :class:`Run` or a
row carries :data:`KEY`, which only an active run writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import config

#: The private column / encoded-sample / batch key that carries each row's (normalized) reward.
KEY = "_rift_reward"
#: A string every copy of this package's ``--external_plugins`` file contains.
PLUGIN_MARKER = "__rift_losses_swift_plugin__"
#: MS-Swift's distribution and the versions the patches are written for (for the error when a hook point moved).
HOST = ("ms-swift", "4.x")


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


def logger():
    from swift.utils import get_logger

    return get_logger()
