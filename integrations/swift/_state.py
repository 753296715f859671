"""What one MS-Swift training pipeline holds for the adapter, and the keys that carry rewards.

A RIFT run (:class:`Run`) lives on the ``SwiftSft`` pipeline instance (attribute
:data:`RUN_ATTR`), set by :mod:`._activation`. MS-Swift loads datasets through functions that
do not see the pipeline, so while ``SwiftSft._prepare_dataset`` runs, :func:`preparing` makes
the pipeline's :class:`Pipeline` the current one of this thread / task (a ``ContextVar``, reset
when the method returns): the dataset patches (:mod:`._datasets`) read it with :func:`current`
and change nothing outside it. The template and trainer patches need no state: a row carries
:data:`KEY` only when an active run wrote it, and the trainer reads its loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
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


#: The ``SwiftSft`` attribute holding the pipeline's active :class:`Run` (None for another loss).
RUN_ATTR = "_rift_run"


@dataclass
class Pipeline:
    """One pipeline's arguments and run, and the dataset it is loading (``{"name": ..., "raw_checked": bool}``)."""

    args: Any
    run: Run | None
    loading: dict | None = field(default=None)


_CURRENT: ContextVar[Pipeline | None] = ContextVar("rift_losses_swift_pipeline", default=None)


def current() -> Pipeline | None:
    """The pipeline preparing its datasets in this context, or None."""
    return _CURRENT.get()


@contextmanager
def preparing(pipeline: Pipeline) -> Iterator[Pipeline]:
    """Make ``pipeline`` the current one for the duration of the block."""
    token = _CURRENT.set(pipeline)
    try:
        yield pipeline
    finally:
        _CURRENT.reset(token)


def logger():
    from swift.utils import get_logger

    return get_logger()
