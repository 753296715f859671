"""The built wheel ships the package and nothing that only the tests, benchmarks, demo or
reproduction use (issue 20, item 5).

The wheel is built offline from a copy of the tracked files (``pip wheel --no-deps
--no-build-isolation``: setuptools from the environment, nothing downloaded), so the build's
``build/`` and ``*.egg-info`` never land in the checkout. About 10 s on the 2-core machine.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: What a user's site-packages gains: the package, the start-up hook and its .pth line.
TOP_LEVEL = {"rift_losses", "_rift_losses_hook.py", "rift_losses.pth"}
#: Modules that only tests use; none may ship under rift_losses/ (the retry harness lives in
#: tests/harness.py, the tiny-model builder in rift_dev/tiny_model.py).
TEST_ONLY_MODULES = {"testing.py", "tiny_model.py", "conftest.py"}
#: Files every wheel must hold (so an empty or wrongly rooted wheel cannot pass).
REQUIRED = {
    "rift_losses/__init__.py",
    "rift_losses/losses.py",
    "rift_losses/data/cli.py",
    "rift_losses/integrations/_common.py",
    "rift_losses/integrations/swift/__init__.py",
    "rift_losses/integrations/llamafactory/__init__.py",
    "rift_losses/integrations/trl/__init__.py",
    "_rift_losses_hook.py",
    "rift_losses.pth",
}


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if out.returncode != 0:  # not a git checkout (an unpacked source archive): take the tree
        return [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file() and not {".venvs", ".git", "build", "dist"} & set(p.relative_to(ROOT).parts)
        ]
    return [name for name in out.stdout.decode().split("\0") if name]


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> dict[str, bytes]:
    src = tmp_path_factory.mktemp("src")
    for name in _tracked_files():
        path = ROOT / name
        if path.is_file():  # a tracked file deleted in the work tree is not built
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = dist.glob("rift_losses-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


@pytest.fixture(scope="module")
def wheel_names(wheel_files) -> list[str]:
    return list(wheel_files)


def test_wheel_holds_exactly_the_package_the_hook_and_its_metadata(wheel_names):
    top = {name.split("/")[0] for name in wheel_names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert len(dist_info) == 1, top
    assert top - dist_info == TOP_LEVEL, sorted(top)  # no rift_dev, tests, benchmarks, demo, reproduce
    assert not REQUIRED - set(wheel_names), sorted(REQUIRED - set(wheel_names))


def test_no_shipped_module_imports_test_only_code(wheel_files):
    offenders = [
        name
        for name, data in wheel_files.items()
        if name.endswith(".py") and any(word in data.decode() for word in ("rift_dev", "import pytest", "from tests"))
    ]
    assert not offenders


def test_no_test_only_module_ships(wheel_names):
    shipped = [n for n in wheel_names if n.startswith("rift_losses/") and n.rsplit("/", 1)[-1] in TEST_ONLY_MODULES]
    assert not shipped
