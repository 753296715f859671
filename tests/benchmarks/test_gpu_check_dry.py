"""``benchmarks/gpu_check.py --dry-run``: every part of ``make gpu-check`` on the CPU, so it cannot rot.

The dry run is the real script at tiny sizes: ``pytest -m gpu`` collected (its tests skip without
CUDA), the kernel benchmark through ``bench_logprobs.measure``, the Triton autotune table in
Triton's interpreter (each candidate checked equal to the default configuration), and one training
step per host through the real CLIs. Run in the LLaMA-Factory environment (Triton); the host part
also needs ``.venvs/swift`` (``make venvs``).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def gpu_check(out: Path, *args, env=None, timeout=900):
    env = {**os.environ, **(env or {})}
    env.pop("RIFT_GPU_CHECK_DRY", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
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


def test_dry_run_kernel_parts(tmp_path):
    proc = gpu_check(tmp_path, "--dry-run", "--parts", "pytest,kernels,liger,autotune")
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
    assert kernels["rift_loss (ours)"]["loss_abs_err"] < 1e-5 and kernels["rift_loss (ours)"]["peak_extra_bytes"] > 0
    tune = parts["autotune"]["result"]
    assert tune["interpreter"] is True
    for row in tune["by_vocab"].values():
        assert len(row["timings_ms"]) >= 4 and row["best"] in row["timings_ms"] and row["default"] in row["timings_ms"]
    assert "installed" in parts["liger"]["result"]


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
        for mode in ("plain", "rift", "rift, logits"):  # RIFT through the fused head (default) and the logits
            run = runs[mode]
            assert run["input_shape"][0] == 4 and run["target_tokens"] > 0 and run["step_ms"] > 0, (name, mode, run)
            assert len(run["losses"]) == 3 and all(x == x for x in run["losses"])
        assert set(runs["ratios"]) == set(runs["ratios_logits"]) == {"step_time", "peak_rss_bytes"}
        # same data, same initial model: the fused head's first loss is the logits path's
        assert abs(runs["rift"]["losses"][0] - runs["rift, logits"]["losses"][0]) < 1e-4, (name, runs)
