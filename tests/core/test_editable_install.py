"""The editable install ``make`` builds: ``rift_losses.integrations`` is the top-level
``integrations/`` folder wherever Python starts, and no import finder is loaded at start-up.

``make`` installs the checkout as a path entry (``--config-settings editable_mode=compat``);
``rift_losses/integrations/__init__.py`` stands in for the folder there. setuptools' default
editable mode would instead load its import finder (``__editable___*_finder``) at every
interpreter start: about 20 ms each on this 2-core machine.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_WHERE = """
import json, sys
import rift_losses.integrations as pkg
import rift_losses.integrations._common as common
import rift_losses.integrations.swift as swift
print(json.dumps({"path": list(pkg.__path__), "common": common.__file__, "swift": swift.__file__}))
"""


def _run(code: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_integrations_are_the_top_level_folder_from_inside_and_outside_the_checkout(tmp_path):
    """From the checkout (it is on sys.path: scripts, ``python -m pytest``) and from elsewhere
    (the venv's install), the same files are imported."""
    folder = ROOT / "integrations"
    for cwd in (ROOT, tmp_path):
        got = json.loads(_run(_WHERE, cwd))
        assert [Path(p).resolve() for p in got["path"]] == [folder], (cwd, got)
        assert Path(got["common"]).resolve() == folder / "_common.py", (cwd, got)
        assert Path(got["swift"]).resolve() == folder / "swift" / "__init__.py", (cwd, got)


def test_interpreter_start_loads_no_editable_import_finder(tmp_path):
    loaded = json.loads(_run("import json, sys; print(json.dumps(sorted(sys.modules)))", tmp_path))
    finders = [name for name in loaded if name.startswith("__editable__")]
    assert not finders, (
        f"an import finder is loaded at every interpreter start: {finders}; install the checkout with "
        "`pip install --no-deps --config-settings editable_mode=compat -e .` (as the Makefile does)"
    )
    assert "_rift_losses_hook" in loaded  # the .pth hook itself is still there
