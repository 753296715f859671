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


@pytest.mark.slow
def test_dry_run_hosts_part(tmp_path):
    proc = gpu_check(tmp_path, "--dry-run", "--parts", "hosts")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    hosts = report(tmp_path)["parts"]["hosts"]["result"]["hosts"]
    assert set(hosts) == {"ms-swift", "llamafactory", "trl"}
    for name, runs in hosts.items():
        for mode in ("plain", "rift"):
            run = runs[mode]
            assert run["input_shape"][0] == 4 and run["target_tokens"] > 0 and run["step_ms"] > 0, (name, mode, run)
            assert len(run["losses"]) == 3 and all(x == x for x in run["losses"])
        assert set(runs["ratios"]) == {"step_time", "peak_rss_bytes"}


def _farm(dest: Path, source: Path, keep) -> Path:
    """``dest`` with a symbolic link to each entry of ``source`` whose name ``keep`` accepts."""
    dest.mkdir(parents=True)
    for entry in source.iterdir():
        if keep(entry.name):
            (dest / entry.name).symlink_to(entry)
    return dest


@pytest.mark.slow
def test_dry_run_hosts_from_a_target_folder(tmp_path):
    """The hosts part as on a node without venvs: the TRL host from ``gpu_site/trl`` (TRL alone, as
    ``pip install --target`` lays it out), the rest of TRL's venv as the node's base; MS-Swift and
    LLaMA-Factory are nowhere, so they are named as not available and the part fails, while TRL runs."""
    venv = ROOT / ".venvs" / "trl"
    if not OUTSIDE_VENV or not (venv / "bin" / "python").exists():
        pytest.skip("needs a venv's base interpreter and .venvs/trl (make venvs)")
    lib = next((venv / "lib").glob("python3.*/site-packages"))
    if lib.parent.name != f"python{sys.version_info.major}.{sys.version_info.minor}":
        pytest.skip(f"{venv} is for {lib.parent.name}, this base interpreter is {sys.version.split()[0]}")
    is_trl = lambda name: name == "trl" or name.startswith("trl-")  # noqa: E731
    base = _farm(tmp_path / "base", lib, lambda name: not is_trl(name) and not name.endswith(".pth"))
    _farm(tmp_path / "site" / "trl", lib, is_trl)
    out = tmp_path / "out"
    proc = gpu_check(
        out,
        "--dry-run",
        "--parts",
        "hosts",
        "--venvs",
        "",
        "--site",
        str(tmp_path / "site"),
        python=BASE_PYTHON,
        env={"PYTHONPATH": str(base)},
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    part = report(out)["parts"]["hosts"]
    result = part["result"]
    assert set(result["not_run"]) == {"ms-swift", "llamafactory"}, result["not_run"]
    assert "No module named 'swift'" in result["not_run"]["ms-swift"]
    assert "No module named 'llamafactory'" in result["not_run"]["llamafactory"]
    assert "ms-swift: not available" in part["error"] and "llamafactory: not available" in part["error"]
    assert "trl" not in part["error"], part["error"]
    runtime = result["runtimes"]["trl"]
    assert runtime["route"] == "site" and runtime["python"] == BASE_PYTHON, runtime
    assert runtime["site"] == [str(tmp_path / "site" / "trl")] and runtime["trl"] == "1.16.0", runtime
    runs = result["hosts"]["trl"]
    for mode in ("plain", "rift"):
        assert runs[mode]["input_shape"][0] == 4 and runs[mode]["target_tokens"] > 0, runs[mode]
        assert len(runs[mode]["losses"]) == 3 and all(x == x for x in runs[mode]["losses"])
    # RIFT really ran (the hook came from the probe's sitecustomize, no .pth): its loss differs from plain SFT
    assert runs["rift"]["losses"][0] != runs["plain"]["losses"][0]
    text = (out / "gpu_report.md").read_text()
    assert "Hosts not run:" in text and "- ms-swift: ms-swift: no Python here imports" in text
