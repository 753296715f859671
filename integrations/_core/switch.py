"""The fused-head switch, without importing torch (the hosts' argument checks read it before the model loads)."""

from __future__ import annotations

import os
from collections.abc import Mapping

#: The environment switch: "0" turns the fused LM head off in every host, "1" (default) leaves it on.
ENV_FUSED_HEAD = "RIFT_FUSED_HEAD"
#: The values of :data:`ENV_FUSED_HEAD`.
SWITCH_VALUES = ("1", "0")


def env_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """``RIFT_FUSED_HEAD`` (default "1"); ``ValueError`` on another value."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_FUSED_HEAD, "1")
    if value not in SWITCH_VALUES:
        raise ValueError(f"{ENV_FUSED_HEAD} must be one of {', '.join(map(repr, SWITCH_VALUES))}, got {value!r}")
    return value == "1"
