"""``args.json``: keep this package's plugin file out of the arguments MS-Swift saves.

``BaseArguments.save_args``: an absolute path to the ``--external_plugins`` file in
``args.json`` breaks ``swift infer``/``export`` on another machine; inference does not need it.
"""

from __future__ import annotations

import os

from .._core.patching import wrap
from ._state import HOST, PLUGIN_MARKER, logger


def _is_our_plugin(path: str) -> bool:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            return PLUGIN_MARKER in f.read(65536)
    except OSError:
        return False


def install_args_json_patch() -> None:
    """Wrap ``BaseArguments.save_args`` (idempotent)."""
    from swift.arguments import BaseArguments

    def make_save_args(original):
        def save_args(self, *args, **kwargs):
            plugins = getattr(self, "external_plugins", None)
            ours = [p for p in plugins or [] if _is_our_plugin(p)]
            if not ours:
                return original(self, *args, **kwargs)
            self.external_plugins = [p for p in plugins if p not in ours]
            logger().info(
                f"rift-losses: args.json leaves out external_plugins {ours}: inference does not need the RIFT "
                "losses, and an absolute path there breaks `swift infer`/`swift export` where it does not exist"
            )
            try:
                return original(self, *args, **kwargs)
            finally:
                self.external_plugins = plugins

        return save_args

    wrap(BaseArguments, "save_args", make_save_args, host=HOST)
