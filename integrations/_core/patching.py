"""Replace a host's method or module attribute once, loudly when the host lacks it."""

from __future__ import annotations

import functools
import importlib

#: Set (True) on every replacement, so a second install leaves it alone. The original stays
#: reachable: ``__wrapped__`` of a function, the base of a replacing subclass.
MARK = "__rift_wrapped__"


def _missing(where: str, name: str, host: tuple[str, str] | None) -> RuntimeError:
    if host is None:
        return RuntimeError(f"rift-losses needs {where}.{name}, which this version does not have")
    from importlib.metadata import PackageNotFoundError, version

    distribution, supported = host
    try:
        have = f"{distribution} {version(distribution)}"
    except PackageNotFoundError:
        have = f"this {distribution}"
    return RuntimeError(f"rift-losses needs {where}.{name}, which {have} does not have (supported: {supported})")


def wrap(
    owner, name: str, make, *, host: tuple[str, str] | None = None, static: bool = False, update: bool = True
) -> None:
    """Replace ``owner.name`` by ``make(original)`` once (idempotent).

    ``owner`` is a class or a module. ``host`` is ``(distribution, supported versions)`` for the
    error raised when ``owner`` has no ``name`` (a release moved the hook point): the adapter
    never falls back to plain training silently. ``static`` installs the replacement as a
    staticmethod; ``update`` copies the original's name and docstring onto a function.
    """
    original = getattr(owner, name, None)
    if original is None:
        raise _missing(getattr(owner, "__name__", repr(owner)), name, host)
    if getattr(original, MARK, False):
        return
    replacement = make(original)
    if update and not isinstance(replacement, type):
        functools.update_wrapper(replacement, original)
    setattr(replacement, MARK, True)
    setattr(owner, name, staticmethod(replacement) if static else replacement)


def wrap_all(patches, *, host: tuple[str, str]) -> None:
    """Apply ``(module, "name" or "Class.name", make)`` patches with :func:`wrap`, importing each module."""
    for module_name, dotted, make in patches:
        owner = importlib.import_module(module_name)
        *path, name = dotted.split(".")
        for part in path:
            owner = getattr(owner, part, None)
            if owner is None:
                raise _missing(module_name, dotted, host)
        if getattr(owner, name, None) is None:
            raise _missing(module_name, dotted, host)
        wrap(owner, name, make, host=host, update=False)
