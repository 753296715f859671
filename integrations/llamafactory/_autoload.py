"""Registration with LLaMA-Factory, run right after ``llamafactory.hparams.parser`` is imported.

``_rift_losses_hook`` (the ``.pth`` lazy hook) calls :func:`register` in every process that
imports LLaMA-Factory's argument parser, before any YAML is parsed; the explicit launcher
(``rift-llamafactory-cli``) calls :func:`install`. Both are idempotent.

:func:`register` first wraps the parser's ``_parse_args`` with a small guard that needs
nothing but the standard library, then lets :mod:`._args` add the ``rift_*`` fields. If that
second part fails (say, a LLaMA-Factory release renamed something), the hook keeps the error
and LLaMA-Factory runs untouched; the guard re-raises the error, loudly, only for a config
that has a ``rift`` key. It also keeps ``ALLOW_EXTRA_ARGS=1`` (LLaMA-Factory's switch that
ignores unknown keys) from silently dropping a misspelt ``rift_*`` key, and refuses ``rift_*``
options given without ``use_rift_loss: true``: either would train plain cross-entropy on
wrong answers.
"""

import dataclasses
import difflib
import re
import sys

TRIGGER = "llamafactory.hparams.parser"
_REGISTERED = "_rift_losses_registered"
_GUARDED = "_rift_losses_guarded"


def register() -> None:
    """Add the RIFT options to LLaMA-Factory's argument parser (the module must be imported)."""
    parser_module = sys.modules[TRIGGER]
    if getattr(parser_module, _REGISTERED, False):
        return
    _install_guard(parser_module)
    from . import _args

    _args.patch_parser(parser_module)
    setattr(parser_module, _REGISTERED, True)


def install() -> None:
    """Import LLaMA-Factory's parser and register (the explicit route, without the .pth hook)."""
    __import__(TRIGGER)
    register()


def _registration_error():
    from .._core.hook import registration_error

    return registration_error(TRIGGER)


def _keys(args) -> list:
    """Option names in a parsed config: dict keys, or ``--name[=value]`` command-line tokens."""
    if isinstance(args, dict):
        return [str(k) for k in args]
    return [a[2:].split("=", 1)[0] for a in args or () if isinstance(a, str) and a.startswith("--")]


#: option names that start a word with "rift" (use_rift_loss, riftloss, --use-rift-loss; not drift_x)
_RIFT_WORD = re.compile(r"(?:^|[_-])rift", re.IGNORECASE)


def _install_guard(parser_module) -> None:
    if getattr(parser_module, _GUARDED, False):
        return
    original = parser_module._parse_args

    def _parse_args(parser, args=None, allow_extra_keys=False):
        args = parser_module.read_args(args)
        rift_keys = [k for k in _keys(args) if _RIFT_WORD.search(k)]
        if rift_keys:
            if not getattr(parser_module, _REGISTERED, False):
                error = _registration_error()
                raise RuntimeError(
                    f"the RIFT options {rift_keys} need rift-losses' LLaMA-Factory adapter, which failed to "
                    f"register with this LLaMA-Factory: {error!r}"
                ) from error
            known = {f.name for dtype in parser.dataclass_types for f in dataclasses.fields(dtype)}
            unknown = [k for k in rift_keys if k.replace("-", "_") not in known]
            if allow_extra_keys and "use_rift_loss" in known and unknown:
                valid = sorted(k for k in known if "rift" in k)
                close = [(difflib.get_close_matches(k.replace("-", "_"), valid, n=1, cutoff=0.75), k) for k in unknown]
                hint = ", ".join(f"{m[0]!r} for {k!r}" for m, k in close if m)
                raise ValueError(
                    f"RIFT options must be spelt as one of {valid}, got {unknown}"
                    + (f"; did you mean {hint}?" if hint else "")
                    + " (ALLOW_EXTRA_ARGS would otherwise ignore them and train plain cross-entropy)"
                )
        parsed = original(parser, args, allow_extra_keys)
        options = [k for k in rift_keys if k.replace("-", "_") != "use_rift_loss"]
        finetuning = (
            next((a for a in parsed if hasattr(a, "use_rift_loss")), None) if isinstance(parsed, tuple) else None
        )
        if options and finetuning is not None and not finetuning.use_rift_loss:
            raise ValueError(
                f"use_rift_loss must be true when RIFT options are set, got use_rift_loss: false with {options}: "
                "without it LLaMA-Factory trains plain cross-entropy and the options would be ignored"
            )
        return parsed

    parser_module._parse_args = _parse_args
    setattr(parser_module, _GUARDED, True)
