"""``benchmarks/gpu_check.py --dry-run``: every part of ``make gpu-check`` on the CPU, so it cannot rot.

The dry run is the real script at tiny sizes: ``pytest -m gpu`` collected (its tests skip without
CUDA), the kernel benchmark through ``bench_logprobs.measure``, the Triton autotune table in
Triton's interpreter (each candidate checked equal to the default configuration), and one training
step per host through the real CLIs. Run in the LLaMA-Factory environment (Triton); the host part
also needs ``.venvs/swift`` and ``.venvs/trl`` (``make venvs``).

As on an air-gapped GPU node (no venv, nothing installed but a base), the kernel parts and the
target-folder host run use the base interpreter of this venv (``sys._base_executable``), which has
no packages of its own, with a venv's ``site-packages`` as a plain folder on ``PYTHONPATH``: no
``.pth`` file runs, so rift-losses comes from the checkout only, as on the node.
"""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
OUTSIDE_VENV = sys.prefix != sys.base_prefix  # a venv: its base interpreter stands for the node's Python


def gpu_check(out: Path, *args, env=None, timeout=900, python=sys.executable):
    env = {**os.environ, **(env or {})}
    env.pop("RIFT_GPU_CHECK_DRY", None)
    proc = subprocess.run(
        [python, str(SCRIPT), "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc


def report(out: Path) -> dict:
    assert (out / "gpu_report.md").read_text().startswith("# rift-losses GPU check (DRY RUN")
    return json.loads((out / "gpu_report.json").read_text())


def as_node(site_packages) -> dict:
    """The environment of the base interpreter with ``site_packages`` as the node's preinstalled base."""
    return {"PYTHONPATH": str(site_packages)} if OUTSIDE_VENV else {}


def test_dry_run_kernel_parts(tmp_path):
    proc = gpu_check(
        tmp_path,
        "--dry-run",
        "--parts",
        "pytest,kernels,liger,autotune",
        python=BASE_PYTHON,
        env=as_node(sysconfig.get_paths()["purelib"]),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "## Triton BLOCK_V x num_warps by vocabulary" in proc.stdout  # the table is printed at the end
    parts = report(tmp_path)["parts"]
    assert all("error" not in p for p in parts.values()), parts
    pytest_gpu = parts["pytest"]["result"]
    assert pytest_gpu["tests"] > 0 and pytest_gpu["failures"] == pytest_gpu["errors"] == 0
    kernels = parts["kernels"]["result"]["paths"]
    assert set(kernels) == {
        "rift_loss (ours)",
        "rift_loss, in-place grad",
        "torch CE none",
        "log_softmax(float)+gather",
    }
    assert kernels["rift_loss (ours)"]["loss_abs_err"] < 1e-5
    # A memory figure is reported for every path; its size at the dry run's 128 KB of logits is the
    # allocator's business (an RSS high-water mark there can read 0), so only its form is checked.
    assert all(isinstance(r["peak_extra_bytes"], int) and r["peak_extra_bytes"] >= 0 for r in kernels.values()), kernels
    tune = parts["autotune"]["result"]
    assert tune["interpreter"] is True
    for row in tune["by_vocab"].values():
        assert len(row["timings_ms"]) >= 4 and row["best"] in row["timings_ms"] and row["default"] in row["timings_ms"]
    assert "installed" in parts["liger"]["result"]
    # every part names the Python and the versions that ran it: here the base interpreter
    for name, part in parts.items():
        runtime = part["runtime"]
        assert runtime["python"] == BASE_PYTHON and runtime["python_version"] == sys.version.split()[0], (name, runtime)
        assert runtime["torch"].split("+")[0][0].isdigit() and runtime["triton"][0].isdigit(), (name, runtime)
    assert "## Pythons and versions by part" in proc.stdout and f"python {BASE_PYTHON}" in proc.stdout


def test_real_run_without_cuda_fails_loudly(tmp_path):
    proc = gpu_check(tmp_path, "--parts", "kernels", env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 1
    assert "kernels FAILED: MeasurementError: no CUDA device is visible to torch" in proc.stderr
    parts = json.loads((tmp_path / "gpu_report.json").read_text())["parts"]
    assert "no CUDA device" in parts["kernels"]["error"]


def _farm(dest: Path, source: Path, keep) -> Path:
    """``dest`` with a symbolic link to each entry of ``source`` whose name ``keep`` accepts."""
    dest.mkdir(parents=True)
    for entry in source.iterdir():
        if keep(entry.name):
            (dest / entry.name).symlink_to(entry)
    return dest


def _is_trl(name: str) -> bool:
    return name == "trl" or name.startswith("trl-")


@pytest.mark.slow
def test_dry_run_hosts_part(tmp_path):
    """One step per host, each host from the Python it would use on a node: MS-Swift and LLaMA-Factory
    from their venvs; TRL as from ``pip install --target gpu_site/trl`` (a folder holding TRL alone)
    on the base interpreter, with the rest of TRL's venv as the node's preinstalled base. No ``.pth``
    file runs for TRL: the adapters are registered by the probe's ``sitecustomize``."""
    venvs = ROOT / ".venvs"
    lib = next((venvs / "trl" / "lib").glob("python3.*/site-packages"), None)
    if not OUTSIDE_VENV or lib is None or lib.parent.name != f"python{sys.version_info[0]}.{sys.version_info[1]}":
        pytest.skip("needs .venvs/trl for this venv's base interpreter (make venvs)")
    _farm(tmp_path / "venvs", venvs, lambda name: name in ("swift", "llamafactory"))
    base = _farm(tmp_path / "base", lib, lambda name: not _is_trl(name) and not name.endswith(".pth"))
    _farm(tmp_path / "site" / "trl", lib, _is_trl)
    out = tmp_path / "out"
    proc = gpu_check(
        out,
        "--dry-run",
        "--parts",
        "hosts",
        "--venvs",
        str(tmp_path / "venvs"),
        "--site",
        str(tmp_path / "site"),
        python=BASE_PYTHON,
        env={"PYTHONPATH": str(base)},
        timeout=1800,  # six host runs; a loaded shared 2-core machine took over 15 minutes
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = report(out)["parts"]["hosts"]["result"]
    hosts = result["hosts"]
    assert set(hosts) == {"ms-swift", "llamafactory", "trl"} and result["not_run"] == {}
    runtimes = result["runtimes"]
    assert {name: r["route"] for name, r in runtimes.items()} == {
        "ms-swift": "venv",
        "llamafactory": "venv",
        "trl": "site",
    }
    assert runtimes["trl"]["python"] == BASE_PYTHON and runtimes["trl"]["site"] == [str(tmp_path / "site" / "trl")]
    assert runtimes["trl"]["trl"] == "1.16.0" and runtimes["ms-swift"]["ms-swift"] == "4.6.0"
    assert runtimes["llamafactory"]["python"] == str(tmp_path / "venvs" / "llamafactory" / "bin" / "python")
    for name, runs in hosts.items():
        for mode in ("plain", "rift", "rift, logits"):  # RIFT through the fused head (default) and the logits
            run = runs[mode]
            assert run["input_shape"][0] == 4 and run["target_tokens"] > 0 and run["step_ms"] > 0, (name, mode, run)
            assert len(run["losses"]) == 3 and all(x == x for x in run["losses"])
        assert set(runs["ratios"]) == set(runs["ratios_logits"]) == {"step_time", "peak_rss_bytes"}
        # same data, same initial model: the fused head's first loss is the logits path's
        assert abs(runs["rift"]["losses"][0] - runs["rift, logits"]["losses"][0]) < 1e-4, (name, runs)
        # RIFT ran (rewards +1.0 / -0.2 weigh the rows): its first loss is not plain SFT's
        assert runs["rift"]["losses"][0] != runs["plain"]["losses"][0], (name, runs)
    assert "- hosts / trl: route site, python " + BASE_PYTHON in (out / "gpu_report.md").read_text()


def test_a_host_no_python_imports_is_named_and_fails(tmp_path):
    """No venv, no ``gpu_site/ms-swift``, and a base without MS-Swift: the hosts part names the host
    with every route tried and fails; the hosts left out by ``--hosts`` are named as left out."""
    (tmp_path / "site").mkdir()
    proc = gpu_check(
        tmp_path / "out",
        "--dry-run",
        "--parts",
        "hosts",
        "--hosts",
        "ms-swift",
        "--venvs",
        "",
        "--site",
        str(tmp_path / "site"),
        python=BASE_PYTHON,
        env=as_node(sysconfig.get_paths()["purelib"]),
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    part = report(tmp_path / "out")["parts"]["hosts"]
    not_run = part["result"]["not_run"]
    assert not_run["llamafactory"] == not_run["trl"] == "left out by --hosts"
    assert not_run["ms-swift"].startswith("no Python here imports swift.pipelines.train.sft")
    assert f"no {tmp_path / 'site' / 'ms-swift'}" in not_run["ms-swift"]
    assert f"current {BASE_PYTHON}: ModuleNotFoundError: No module named 'swift'" in not_run["ms-swift"]
    assert part["error"].startswith("_PartialError: ms-swift: not available: no Python here imports")
    text = (tmp_path / "out" / "gpu_report.md").read_text()
    assert "Hosts not run:" in text and "- trl: left out by --hosts" in text
    assert "- hosts: " in text and "FAILED: _PartialError: ms-swift: not available" in text
