"""The errors kept by the ``.pth`` start-up hook (``_rift_losses_hook.errors``), one reader for every host."""

from __future__ import annotations

import sys


def hook_errors() -> dict:
    """``trigger module -> exception`` the hook caught while registering an adapter ({} when none)."""
    hook = sys.modules.get("_rift_losses_hook")
    return getattr(hook, "errors", None) or {} if hook is not None else {}


def registration_error(trigger: str) -> BaseException | None:
    """The exception the hook kept for ``trigger``, or None."""
    return hook_errors().get(trigger)


def forget(trigger: str) -> None:
    """Drop an earlier failure of ``trigger``'s registration once a later one succeeded."""
    hook_errors().pop(trigger, None)


def raise_registration_errors(triggers, *, host: str) -> None:
    """Re-raise, loudly, the first error the hook kept for one of ``triggers`` (a RIFT run asked for ``host``)."""
    for trigger in triggers:
        exc = registration_error(trigger)
        if exc is not None:
            raise RuntimeError(
                f"rift-losses failed to set up its {host} adapter when {trigger} was imported: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
