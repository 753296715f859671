"""Zero-flag registration: the .pth hook, its opt-out, a broken adapter, the plugin file's path.

Each check runs a fresh interpreter of this virtual environment (the .pth line runs at its
start-up), so what is tested is exactly what `swift sft` gets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rift_losses.integrations.swift import config


def python(code: str, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RIFT_")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


def test_interpreter_start_imports_neither_torch_nor_swift_nor_the_package():
    out = python(
        "import sys, json; print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('torch', 'swift', 'rift_losses', 'transformers'))), '_rift_losses_hook' in sys.modules)"
    )
    assert out.returncode == 0, out.stderr
    modules, hooked = out.stdout.split()
    assert json.loads(modules) == [] and hooked == "True"


REGISTERED = (
    "import swift.loss, _rift_losses_hook as h; from swift.loss import loss_map; "
    "print(sorted(k for k in loss_map if k.startswith('rift'))); print(sorted(h.errors))"
)


def test_importing_swift_registers_every_loss_type_and_the_patches():
    out = python(
        REGISTERED + "; import swift.pipelines.train.sft; from swift.template.base import Template; "
        "print(getattr(Template.data_collator, '__rift_wrapped__', False)); print(sorted(h.errors))"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    names, errors, wrapped, errors_after = out.stdout.strip().splitlines()[-4:]
    assert eval(names) == sorted(config.LOSS_TYPES)
    assert eval(errors) == [] and eval(errors_after) == [] and wrapped == "True"


def test_opt_out_registers_nothing():
    out = python(REGISTERED, RIFT_LOSSES_AUTOLOAD="0")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-2] == "[]"


def test_a_broken_adapter_never_breaks_swift_and_fails_loudly_when_asked_for():
    # Simulate a broken install: the loss module and the patches lack what the hook imports.
    code = (
        "import sys, types, rift_losses.integrations.swift as pkg\n"
        "for name in ('loss', '_template', '_activation'):\n"
        "    sys.modules[f'rift_losses.integrations.swift.{name}'] = types.ModuleType('simulated_breakage')\n"
        "import swift.loss, swift.template.base, swift.pipelines.train.sft, _rift_losses_hook as h\n"
        "from swift.loss import loss_map\n"
        "print(sorted(h.errors))\n"
        "try:\n"
        "    loss_map['rift'](None, None)\n"
        "except RuntimeError as e:\n"
        "    print('RAISED', e)\n"
    )
    out = python(code)
    assert out.returncode == 0, out.stderr[-3000:]  # MS-Swift imports fine
    lines = out.stdout.strip().splitlines()
    assert eval(lines[-2]) == ["swift.loss", "swift.pipelines.train.sft", "swift.template.base"]
    assert (
        lines[-1].startswith("RAISED rift-losses failed to register its MS-Swift loss types")
        and "register_loss_types" in lines[-1]
    )


def test_module_prints_the_external_plugins_file():
    out = subprocess.run(
        [sys.executable, "-m", "rift_losses.integrations.swift"], capture_output=True, text=True, check=True
    )
    path = Path(out.stdout.strip())
    assert path.is_absolute() and path.name == "plugin.py" and path.is_file()
    assert "__rift_losses_swift_plugin__" in path.read_text()
    usage = subprocess.run(
        [sys.executable, "-m", "rift_losses.integrations.swift", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--external_plugins" in usage


@pytest.mark.slow
def test_plugin_file_registers_everything_with_autoload_off():
    from rift_losses.integrations.swift import plugin_path

    code = (
        f"import importlib.util, swift.loss; from swift.loss import loss_map; print('rift' in loss_map); "
        f"spec = importlib.util.spec_from_file_location('p', {plugin_path()!r}); m = "
        "importlib.util.module_from_spec(spec); "
        f"spec.loader.exec_module(m); from swift.template.base import Template; "
        "print(sorted(k for k in loss_map if k.startswith('rift'))); print(getattr(Template.encode, "
        "'__rift_wrapped__', False))"
    )
    out = python(code, RIFT_LOSSES_AUTOLOAD="0")
    assert out.returncode == 0, out.stderr[-3000:]
    before, names, wrapped = out.stdout.strip().splitlines()[-3:]
    assert before == "False" and eval(names) == sorted(config.LOSS_TYPES) and wrapped == "True"
