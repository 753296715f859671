"""Zero-flag registration of rift-losses with its host frameworks, at no start-up cost.

``rift_losses.pth`` (installed beside this module) runs ``import _rift_losses_hook`` at every
interpreter start. This module imports nothing that is not already loaded (``sys``, ``os``)
and installs a finder on ``sys.meta_path`` that waits for a *trigger* module of a host
(e.g. ``swift.loss``). Right after the trigger finishes importing, in every process (the
hosts re-execute themselves and run under torchrun), the hook calls the adapter's
registration function. Nothing of torch, rift_losses or the host is imported before that.

Safety: a broken rift-losses must never break a host. Any exception in a registration is
caught and kept in :data:`errors`; the adapters re-raise it, loudly, only when a RIFT option
is actually asked for.

Opt out: ``RIFT_LOSSES_AUTOLOAD=0``. Sites that refuse .pth start-up code use the explicit
routes documented on the hosts' pages in docs/ (``--external_plugins`` for MS-Swift, the
``rift-llamafactory-cli`` launcher for LLaMA-Factory, ``rift-trl`` for TRL).
"""

import os
import sys

#: trigger module -> "module:function" to call right after the trigger is imported.
HOOKS = {
    "swift.loss": "rift_losses.integrations.swift._autoload:register",
    "swift.template.base": "rift_losses.integrations.swift._autoload:patch_template",
    "swift.pipelines.train.sft": "rift_losses.integrations.swift._autoload:patch_pipeline",
    "llamafactory.hparams.parser": "rift_losses.integrations.llamafactory._autoload:register",
    "trl": "rift_losses.integrations.trl._autoload:register_script",
    "trl.scripts.sft": "rift_losses.integrations.trl._autoload:register_cli",
    "trl.scripts.grpo": "rift_losses.integrations.trl._autoload:register_grpo_cli",
}


def _main_script_is(*parts):
    """Whether this process runs the file ``parts`` (a path tail) as its ``__main__`` script."""
    main = sys.modules.get("__main__")
    path = os.path.normpath(getattr(main, "__file__", None) or "")
    return path.endswith(os.sep + os.path.join(*parts))


#: trigger module -> a cheap test run before the registration is imported (skipped when false).
CONDITIONS = {
    # Only the process that runs TRL's sft.py or grpo.py (launched by `trl sft`/`trl grpo`) registers on `import trl`.
    "trl": lambda: _main_script_is("trl", "scripts", "sft.py") or _main_script_is("trl", "scripts", "grpo.py"),
}

#: trigger module -> the exception its registration raised (re-raised by the adapters on use).
errors = {}


def _run(trigger):
    target = HOOKS[trigger]
    condition = CONDITIONS.get(trigger)
    if condition is not None and not condition():
        return
    try:
        module_name, _, func = target.partition(":")
        __import__(module_name)
        getattr(sys.modules[module_name], func)()
    except BaseException as exc:  # never break the host; surfaced when RIFT is asked for
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        errors[trigger] = exc


class _Loader:
    """Wraps a trigger's real loader: executes the module, then runs the registration."""

    def __init__(self, loader, trigger):
        self._loader = loader
        self._trigger = trigger

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _run(self._trigger)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _Finder:
    """A meta-path finder that only looks at trigger names and defers to the others."""

    def find_spec(self, name, path=None, target=None):
        if name not in HOOKS or name in _pending:
            return None
        _pending.add(name)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = _Loader(spec.loader, name)
                    return spec
            return None
        finally:
            _pending.discard(name)

    def invalidate_caches(self):
        pass


_pending = set()


def install():
    """Install the finder (idempotent); for triggers already imported, register now."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    for trigger in HOOKS:
        if trigger in sys.modules:
            _run(trigger)


if os.environ.get("RIFT_LOSSES_AUTOLOAD", "1").strip().lower() not in ("0", "false", "no", "off"):
    install()
