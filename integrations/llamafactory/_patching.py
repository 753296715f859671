"""Replace names that LLaMA-Factory looks up at call time, once, loudly if one is missing."""

import importlib

_MARK = "__rift_losses_original__"


def wrap_all(patches) -> None:
    """Apply ``(module, "name" or "Class.name", factory)`` patches: ``name = factory(original)``.

    Idempotent: a name already replaced is left alone. A missing module or name (a
    LLaMA-Factory release that moved a hook point) raises, naming it: this only runs for a
    config that asked for RIFT, which must never fall back to plain training silently.
    """
    for module_name, dotted, factory in patches:
        owner = importlib.import_module(module_name)
        *path, name = dotted.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        original = getattr(owner, name, None) if owner is not None else None
        if original is None:
            from importlib.metadata import version

            raise RuntimeError(
                f"rift-losses needs {module_name}.{dotted}, which llamafactory {version('llamafactory')} does not "
                "have (supported: 0.9.3 to 0.9.5)"
            )
        if getattr(original, _MARK, None) is not None:
            continue
        replacement = factory(original)
        setattr(replacement, _MARK, original)
        setattr(owner, name, replacement)
