"""Every GPU figure of rift-losses in one run: ``make gpu-check`` (one CUDA GPU, under 8 minutes).

Writes ``gpu_report.json`` (every measurement) and ``gpu_report.md`` (the tables, also printed at
the end) into the directory given by ``--out`` or ``RIFT_GPU_OUT`` (default ``gpu_out/``). Parts:

1. ``pytest``: ``pytest -m gpu tests/core`` (Triton and PyTorch paths on CUDA against the float64
   reference, values and gradients, bf16/fp16/fp32). Every selected test must pass; a skip fails.
2. ``kernels``: forward + backward at N = 16384 target tokens (8 x 2048), V = 151936, bf16, with
   ``benchmarks/bench_logprobs.py``'s code: RIFT (default and in place) against torch
   ``cross_entropy(reduction="none")`` and ``log_softmax(float)+gather``; time, peak extra memory,
   ratios, achieved bandwidth against the 3-pass bound (a device copy of the logits).
3. ``liger``: from hidden states (H = 1536): ``hidden @ W.T`` + ``rift_loss`` (in place or not)
   against rift-losses' chunked head ``rift_losses.fused_loss`` and, when liger_kernel is
   installed, Liger's ``LigerFusedLinearCrossEntropyLoss(reduction="none")``.
4. ``autotune``: the Triton kernels' ``BLOCK_V`` x ``num_warps`` candidates by vocabulary size, each
   timed once (after a compiling launch) on 4096 rows; best and default reported, results checked
   equal to the default configuration's.
5. ``hosts``: one real training step per host (``benchmarks/hosts.py``: ``swift sft``,
   ``llamafactory-cli train``) on a Qwen2.5-1.5B-shaped model with random weights built here (bf16,
   gradient checkpointing, 4 x 2048 tokens, half of each row the prompt), plain SFT, RIFT (the
   default: the fused LM head) and RIFT from materialized logits (``RIFT_FUSED_HEAD=0`` /
   ``rift_fused_head: false``): step time (median of steps 2-3) and peak GPU memory, with ratios
   to plain SFT.

A part that cannot take its measurement (no CUDA, a failed run, a missing figure) is an error: the
script carries on with the other parts, writes the report with the error, and exits 1.

No virtual environment is needed: any Python with torch and Triton runs parts 1-4 (from the
checkout, which is put on ``sys.path``; ``gpu_site/pytest`` too if present, for pytest and
hypothesis). Part 5 runs each host with the first Python that imports it (``hosts.find_runtime``):
``.venvs/<host>`` if it exists (``make venvs``), else this Python with ``gpu_site/<host>`` (a
``pip install --no-index --target`` of ``make gpu-wheels``'s ``gpu_wheels/<host>``) in front of
its ``sys.path``, else this Python alone. A host that none of them imports is named in the report
with the reason, and is an error unless ``--hosts`` leaves it out (then it is named as left out).
The report says for every part which Python ran it (executable, version) and with which torch,
Triton, transformers and host versions.

``--dry-run`` (or ``RIFT_GPU_CHECK_DRY=1``) runs every part on the CPU at tiny sizes: the Triton
kernels in Triton's interpreter (``TRITON_INTERPRET=1``), the hosts on a tiny model in float32;
everything but CUDA itself is exercised (``tests/benchmarks/test_gpu_check_dry.py`` runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PARTS = ("pytest", "kernels", "liger", "autotune", "hosts")

# The sizes of a real run and of the dry run.
REAL = SimpleNamespace(
    B=8,
    T=2048,
    V=151936,
    repeats=10,
    dtype="bf16",
    liger=SimpleNamespace(N=16384, H=1536, V=151936),
    autotune=SimpleNamespace(rows=4096, vocabs=(32000, 65536, 151936), block_v=(2048, 4096, 8192), warps=(4, 8, 16)),
    # 990 + 990 tokens + the template's ~66 (system prompt, role tags) = 2046 of max_length 2048
    hosts=SimpleNamespace(rows=4, prompt=990, response=990, max_length=2048, steps=3, bf16=True),
)
DRY = SimpleNamespace(
    B=2,
    T=32,
    V=1000,
    repeats=2,
    dtype="bf16",
    liger=SimpleNamespace(N=64, H=32, V=1000),
    autotune=SimpleNamespace(rows=4, vocabs=(1000, 3001), block_v=(256, 512), warps=(4, 8)),
    hosts=SimpleNamespace(rows=4, prompt=16, response=16, max_length=128, steps=3, bf16=False),
)


def _dry_shape():
    import hosts

    return hosts.Shape(vocab=1000, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, dtype="float32")


class MeasurementError(RuntimeError):
    pass


def _device(dry: bool):
    import torch

    if dry:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise MeasurementError(
            "no CUDA device is visible to torch (torch.cuda.is_available() is False); "
            "use --dry-run for the CPU rehearsal"
        )
    return torch.device("cuda")


# ----------------------------------------------------------------------------------- 1. pytest


def part_pytest(cfg, dry, out: Path) -> dict:
    xml = out / "pytest_gpu.xml"
    env = dict(os.environ)
    site = cfg.where.site / "pytest" if cfg.where.site else None
    if site and site.is_dir():  # pytest and hypothesis from `make gpu-wheels`
        env["PYTHONPATH"] = os.pathsep.join(x for x in (str(site), env.get("PYTHONPATH")) if x)
    if dry:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.pop("TRITON_INTERPRET", None)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        str(ROOT / "tests" / "core"),
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={xml}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    (out / "pytest_gpu.log").write_text(proc.stdout + proc.stderr)
    if not xml.exists():
        raise MeasurementError(
            f"pytest wrote no report (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    result = {"command": " ".join(cmd[1:]), "exit": proc.returncode, **counts}
    if site and site.is_dir():
        result["site"] = str(site)
    if counts["tests"] == 0:
        raise MeasurementError("pytest -m gpu selected no test")
    if counts["failures"] or counts["errors"]:
        raise MeasurementError(f"pytest -m gpu: {counts} (log {out / 'pytest_gpu.log'})")
    if not dry and (counts["skipped"] or proc.returncode != 0):
        raise MeasurementError(
            f"pytest -m gpu must run every selected test on a GPU, got {counts}, exit {proc.returncode}"
        )
    return result


# ---------------------------------------------------------------------------------- 2. kernels


def part_kernels(cfg, dry, out: Path) -> dict:
    import bench_logprobs as bench
    import torch

    device = _device(dry)
    args = SimpleNamespace(
        B=cfg.B, T=cfg.T, V=cfg.V, mask="random", repeats=cfg.repeats, threads=torch.get_num_threads(), check=True
    )
    m = bench.measure(args, device, cfg.dtype)
    ce_ms = statistics.median(m["times"][bench.CE])
    ce_peak = m["peaks"][bench.CE]
    rows = {}
    for name, times in m["times"].items():
        med, peak = statistics.median(times), m["peaks"][name]
        if peak is None:
            raise MeasurementError(f"no peak memory for {name!r}")
        row = {
            "median_ms": med,
            "min_ms": min(times),
            "time_x_ce": med / ce_ms,
            "peak_extra_bytes": peak,
            "peak_x_ce": peak / ce_peak if ce_peak else None,
            "loss_abs_err": abs(m["losses"][name] - m["ref"]),
        }
        if m["copy_ms"] is not None:
            passes3 = 3 * m["logits_bytes"]
            row["effective_tb_s_3pass"] = passes3 / (med * 1e-3) / 1e12
            row["bound_over_time"] = 1.5 * m["copy_ms"] / med
        rows[name] = row
    return {
        "N": cfg.B * cfg.T,
        "B": cfg.B,
        "T": cfg.T,
        "V": cfg.V,
        "dtype": cfg.dtype,
        "device": bench.machine_line(device),
        "logits_bytes": m["logits_bytes"],
        "copy_ms": m["copy_ms"],
        "three_pass_bound_ms": None if m["copy_ms"] is None else 1.5 * m["copy_ms"],
        "paths": rows,
        "labels": "a random quarter -100; rewards +1.0/-0.2 by sample",
        "repeats": cfg.repeats,
    }


# ------------------------------------------------------------------------------------ 3. liger


def part_liger(cfg, dry, out: Path) -> dict:
    import importlib.util

    installed = importlib.util.find_spec("liger_kernel") is not None
    device = _device(dry)
    if device.type != "cuda":
        note = "Liger's kernels and the timing need CUDA: not run in the dry run"
        return {"installed": installed, "note": note if installed else "liger_kernel is not installed; " + note}
    import torch

    import rift_losses

    c = cfg.liger
    g = torch.Generator(device="cpu").manual_seed(0)
    hidden = (torch.randn(c.N, c.H, generator=g) * 0.5).to(device, torch.bfloat16).requires_grad_()
    weight = (torch.randn(c.V, c.H, generator=g) * 0.02).to(device, torch.bfloat16).requires_grad_()
    labels = torch.randint(0, c.V, (c.N,), generator=g).to(device)
    labels[torch.randperm(c.N, generator=g)[: c.N // 4].to(device)] = -100
    rewards_tok = torch.where(torch.arange(c.N, device=device) % 2 == 0, 1.0, -0.2)
    if installed:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        flce = LigerFusedLinearCrossEntropyLoss(reduction="none")

    def liger():
        logp = -flce(weight, hidden, labels)
        mask = labels != -100
        return rift_losses.LOSSES["rift"](logp, torch.where(mask, rewards_tok, 0.0)).sum() / mask.sum()

    def ours(inplace):
        def fn():
            logits = hidden @ weight.T
            return rift_losses.rift_loss(logits[None], labels[None], rewards_tok[None], inplace_grad=inplace)

        return fn

    def fused():  # rift-losses' chunked LM head: the logits never built whole
        return rift_losses.fused_loss(hidden, weight, labels, rewards_tok)

    paths = [
        ("hidden @ W.T + rift_loss", ours(False)),
        ("hidden @ W.T + rift_loss, in place", ours(True)),
        ("rift_losses.fused_loss (chunked head)", fused),
    ]
    if installed:
        paths.insert(0, ("Liger FLCE(reduction=none) + RIFT terms", liger))
    results = {}
    for name, fn in paths:
        times = []
        for rep in range(4):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            grads = torch.autograd.grad(fn(), (hidden, weight))
            end.record()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
            del grads
            if rep:
                times.append(start.elapsed_time(end))
        results[name] = {"median_ms": statistics.median(times), "peak_extra_bytes": peak}
    version = None
    if installed:
        import liger_kernel

        version = getattr(liger_kernel, "__version__", "?")
    return {
        "installed": installed,
        "version": version or "not installed",
        "N": c.N,
        "H": c.H,
        "V": c.V,
        "paths": results,
    }


# --------------------------------------------------------------------------------- 4. autotune


def part_autotune(cfg, dry, out: Path) -> dict:
    import torch

    from rift_losses import _triton_logprobs as kernels  # the one import of the kernels here

    device = _device(dry)
    c = cfg.autotune
    cuda = device.type == "cuda"
    table = {}
    for V in c.vocabs:
        g = torch.Generator(device="cpu").manual_seed(V)
        logits = (torch.randn(c.rows, V, generator=g) * 2).to(device, torch.bfloat16)
        labels = torch.randint(0, V, (c.rows,), generator=g).to(device)
        mask = torch.ones(c.rows, dtype=torch.bool, device=device)
        grad = torch.randn(c.rows, generator=g).to(device)
        out_buf = torch.empty_like(logits)
        default = kernels._config(V, None, None)

        def launch(block_v, warps, logits=logits, labels=labels, mask=mask, grad=grad, out_buf=out_buf):
            logp, lse = kernels.forward(logits, labels, mask, block_v=block_v, num_warps=warps)
            kernels.backward(logits, labels, mask, lse, grad, out_buf, block_v=block_v, num_warps=warps)
            return logp

        ref = launch(*default).clone()
        ref_grad = out_buf.clone()
        timings = {}
        candidates = [(b, w) for b in c.block_v for w in c.warps]
        if default not in candidates:
            candidates.append(default)
        for block_v, warps in candidates:
            launch(block_v, warps)  # compiles
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                logp = launch(block_v, warps)
                end.record()
                torch.cuda.synchronize()
                ms = start.elapsed_time(end)
            else:
                t0 = time.perf_counter()
                logp = launch(block_v, warps)
                ms = (time.perf_counter() - t0) * 1e3
            torch.testing.assert_close(logp, ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out_buf.float(), ref_grad.float(), rtol=2e-2, atol=1e-6)
            timings[f"{block_v}x{warps}"] = ms
        best = min(timings, key=timings.get)
        default_key = f"{default[0]}x{default[1]}"
        table[str(V)] = {
            "timings_ms": timings,
            "best": best,
            "best_ms": timings[best],
            "default": default_key,
            "default_ms": timings[default_key],
            "default_over_best": timings[default_key] / timings[best],
        }
    return {
        "rows": c.rows,
        "dtype": "bf16",
        "timed": "once each, after a compiling launch",
        "interpreter": os.environ.get("TRITON_INTERPRET") == "1",
        "by_vocab": table,
    }


# ------------------------------------------------------------------------------------ 5. hosts


def part_hosts(cfg, dry, out: Path) -> dict:
    import hosts

    c = cfg.hosts
    work = out / "hosts"
    if not dry:
        _device(dry)
    shape = _dry_shape() if dry else hosts.QWEN25_1_5B
    runtimes, not_run, errors = {}, {}, []
    for name, host in hosts.HOSTS.items():
        if name not in cfg.where.hosts:
            not_run[name] = "left out by --hosts"
            continue
        try:
            runtimes[name] = hosts.find_runtime(host, venvs=cfg.where.venvs, site=cfg.where.site)
        except hosts.HostUnavailable as exc:
            not_run[name] = str(exc)
            errors.append(f"{name}: not available: {exc}")
    if not runtimes:
        raise _PartialError({"hosts": {}, "runtimes": {}, "not_run": not_run}, "; ".join(errors) or "no host to run")
    model = hosts.build_model(work / "model", shape, device="cpu" if dry else "cuda")
    result = {
        "model": shape.__dict__,
        "batch": c.rows,
        "steps": c.steps,
        "bf16": c.bf16,
        "gradient_checkpointing": True,
        "hosts": {},
        "runtimes": {name: r.describe() for name, r in runtimes.items()},
        "not_run": not_run,
    }
    for name, host in hosts.HOSTS.items():
        if name not in runtimes:
            continue
        runtime = runtimes[name]
        runs = {}
        try:
            data = hosts.write_host_data(
                host,
                work / f"data-{name}",
                model,
                runtime=runtime,
                rows=c.rows,
                prompt_tokens=c.prompt,
                response_tokens=c.response,
            )
        except Exception as exc:
            errors.append(f"{name}: {exc}")
            continue
        for mode, fused in (("plain", False), ("rift", True), ("rift, logits", False)):
            job = hosts.Job(
                mode=mode.split(",")[0],
                model=model,
                data=data,
                out=work / f"{name}-{mode.replace(', ', '-')}",
                batch=c.rows,
                max_length=c.max_length,
                steps=c.steps,
                bf16=c.bf16,
                cpu=dry,
                fused_head=fused,
            )
            try:
                r = hosts.run(host, job, timeout=600, runtime=runtime)
            except Exception as exc:  # the other host still runs
                errors.append(f"{name} {mode}: {exc}")
                continue
            steps = r["steps"]
            timed = [s["seconds"] for s in steps[1:]] or [steps[0]["seconds"]]
            run = {
                "step_ms": 1e3 * statistics.median(timed),
                "input_shape": steps[-1]["input_shape"],
                "target_tokens": steps[-1]["target_tokens"],
                "peak_rss_bytes": r["maxrss_bytes"],
                "losses": [s["loss"] for s in steps],
            }
            if not dry:
                if "cuda_peak" not in steps[-1]:
                    errors.append(f"{name} {mode}: the training step did not run on CUDA")
                    continue
                run["cuda_peak_bytes"] = max(s["cuda_peak"] for s in steps)
                run["cuda_peak_above_step_start_bytes"] = max(
                    s["cuda_peak"] - s["cuda_allocated_before"] for s in steps
                )
                run["device"] = steps[-1]["device"]
            runs[mode] = run
        for mode, key in (("rift", "ratios"), ("rift, logits", "ratios_logits")):
            if "plain" in runs and mode in runs:
                runs[key] = {"step_time": runs[mode]["step_ms"] / runs["plain"]["step_ms"]}
                for k in ("cuda_peak_bytes", "cuda_peak_above_step_start_bytes", "peak_rss_bytes"):
                    if k in runs["plain"]:
                        runs[key][k] = runs[mode][k] / runs["plain"][k]
        result["hosts"][name] = runs
    if errors:
        result["errors"] = errors
        raise _PartialError(result, "; ".join(errors))
    return result


class _PartialError(MeasurementError):
    def __init__(self, result, message):
        super().__init__(message)
        self.result = result


# ----------------------------------------------------------------------------------- report


def _gb(x):
    return "n/a" if x is None else f"{x / 1e9:.2f}"


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [
        f"# rift-losses GPU check{' (DRY RUN: CPU, tiny sizes, Triton interpreter)' if m['dry_run'] else ''}",
        "",
        f"- machine: {m['machine']}",
        f"- torch {m['torch']}, triton {m['triton']}, transformers {m.get('transformers')}, "
        f"python {m['python']} ({m.get('executable')})",
        f"- date {m['date']}, total {m['seconds']:.0f} s",
        "",
    ]
    parts = report["parts"]
    p = parts.get("pytest", {})
    if "result" in p:
        r = p["result"]
        lines += [
            "## pytest -m gpu",
            "",
            f"{r['passed']} passed, {r['skipped']} skipped, {r['failures']} failed, "
            f"{r['errors']} errors of {r['tests']} (`{r['command']}`)",
            "",
        ]
    k = parts.get("kernels", {}).get("result")
    if k:
        lines += [
            f"## Kernels: N = {k['N']}, V = {k['V']}, {k['dtype']} ({k['labels']})",
            "",
            f"logits {k['logits_bytes'] / 1e9:.2f} GB; device copy {k['copy_ms'] and round(k['copy_ms'], 2)} ms; "
            f"3-pass bound {k['three_pass_bound_ms'] and round(k['three_pass_bound_ms'], 2)} ms",
            "",
            "| path | median ms | x CE | peak extra GB | x CE | TB/s (3 passes) | bound / time | \\|loss - fp64\\| |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, r in k["paths"].items():
            cells = [r["peak_x_ce"], r.get("effective_tb_s_3pass"), r.get("bound_over_time")]
            px, tb, bt = ("n/a" if x is None else f"{x:.2f}" for x in cells)
            lines.append(
                f"| {name} | {r['median_ms']:.2f} | {r['time_x_ce']:.2f} | {_gb(r['peak_extra_bytes'])} | "
                f"{px} | {tb} | {bt} | {r['loss_abs_err']:.1e} |"
            )
        lines.append("")
    li = parts.get("liger", {}).get("result")
    if li:
        lines += ["## From hidden states: materialized logits, the fused head, Liger's fused linear CE", ""]
        if "paths" in li:
            lines += [
                f"N = {li['N']}, H = {li['H']}, V = {li['V']}, bf16, liger_kernel {li['version']}",
                "",
                "| path (from hidden states) | median ms | peak extra GB |",
                "| --- | --- | --- |",
            ]
            lines += [f"| {n} | {r['median_ms']:.2f} | {_gb(r['peak_extra_bytes'])} |" for n, r in li["paths"].items()]
        else:
            lines.append(li["note"])
        lines.append("")
    a = parts.get("autotune", {}).get("result")
    if a:
        lines += [
            f"## Triton BLOCK_V x num_warps by vocabulary ({a['rows']} rows, bf16, {a['timed']})",
            "",
            "| V | best | best ms | default | default ms | default / best | all (ms) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for V, r in a["by_vocab"].items():
            alls = ", ".join(f"{k} {v:.3g}" for k, v in r["timings_ms"].items())
            lines.append(
                f"| {V} | {r['best']} | {r['best_ms']:.3f} | {r['default']} | {r['default_ms']:.3f} | "
                f"{r['default_over_best']:.2f} | {alls} |"
            )
        lines.append("")
    h = parts.get("hosts", {}).get("result")
    if h and "model" in h:  # (no model: no host could run)
        s = h["model"]
        lines += [
            f"## One training step per host (Qwen2 V={s['vocab']} H={s['hidden']} L={s['layers']}, {s['dtype']}, "
            f"batch {h['batch']}, gradient checkpointing, {h['steps']} steps, median of steps 2-{h['steps']})",
            "",
            "| host | loss | batch | target tokens | step ms | peak GPU GB | peak above step start GB | peak RSS GB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, runs in h["hosts"].items():
            for mode in ("plain", "rift", "rift, logits"):
                r = runs.get(mode)
                if r:
                    lines.append(
                        f"| {name} | {mode} | {r['input_shape']} | {r['target_tokens']} | {r['step_ms']:.0f} | "
                        f"{_gb(r.get('cuda_peak_bytes'))} | {_gb(r.get('cuda_peak_above_step_start_bytes'))} | "
                        f"{_gb(r['peak_rss_bytes'])} |"
                    )
            for key, what in (("ratios", "RIFT (fused head) / plain"), ("ratios_logits", "RIFT (logits) / plain")):
                if key in runs:
                    lines.append(
                        f"| {name} | {what} | | | {runs[key]['step_time']:.2f} | "
                        f"{runs[key].get('cuda_peak_bytes', float('nan')):.2f} | "
                        f"{runs[key].get('cuda_peak_above_step_start_bytes', float('nan')):.2f} | "
                        f"{runs[key]['peak_rss_bytes']:.2f} |"
                    )
        lines.append("")
    if h and h.get("not_run"):
        lines += ["Hosts not run:", ""]
        lines += [f"- {name}: {why}" for name, why in h["not_run"].items()]
        lines.append("")
    lines += ["## Pythons and versions by part", ""]
    for n, v in parts.items():
        for who, r in _runtimes(n, v):
            lines.append(f"- {n}{who}: {_versions(r)}")
    lines.append("")
    failed = {n: v["error"] for n, v in parts.items() if "error" in v}
    lines += ["## Result", ""]
    lines += [
        f"- {n}: {v.get('seconds', 0):.0f} s, {'FAILED: ' + v['error'].splitlines()[0] if 'error' in v else 'ok'}"
        for n, v in parts.items()
    ]
    lines.append("")
    lines.append("FAILED" if failed else "all measurements taken")
    return "\n".join(lines) + "\n"


def this_python() -> dict:
    """The Python of this process and the versions it imports (the runtime of parts 1-4)."""
    out = {"route": "this process", "python": sys.executable, "python_version": platform.python_version()}
    for name in ("torch", "triton", "transformers"):
        try:
            out[name] = __import__(name).__version__
        except ImportError as exc:
            out[name] = f"not importable ({exc})"
    return out


def _runtimes(part: str, entry: dict):
    yield "", entry.get("runtime", {})
    result = entry.get("result") or {}
    if part == "pytest" and "site" in result:
        yield " (site)", {"site": result["site"]}
    if part == "liger" and "version" in result:
        yield " (liger_kernel)", {"liger_kernel": result["version"]}
    for host, r in (result.get("runtimes") or {}).items():
        yield f" / {host}", r


def _versions(r: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in r.items() if v not in (None, [], ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--out", default=os.environ.get("RIFT_GPU_OUT", "gpu_out"), help="report directory (env RIFT_GPU_OUT)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        default=os.environ.get("RIFT_GPU_CHECK_DRY", "0") == "1",
        help="CPU rehearsal at tiny sizes (env RIFT_GPU_CHECK_DRY=1)",
    )
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated of {', '.join(PARTS)} (default: all)")
    p.add_argument("--hosts", default=None, help="comma-separated hosts for the hosts part (default: all)")
    p.add_argument(
        "--venvs", default=str(ROOT / ".venvs"), help="folder of the hosts' venvs, '' for none (default .venvs)"
    )
    p.add_argument(
        "--site",
        default=str(ROOT / "gpu_site"),
        help="folder of `pip install --target` folders per host and for pytest (default gpu_site)",
    )
    args = p.parse_args(argv)
    parts = args.parts.split(",")
    for part in parts:
        if part not in PARTS:
            p.error(f"--parts must be among {', '.join(PARTS)}, got {part!r}")
    sys.path.insert(0, str(HERE))
    sys.path.insert(1, str(ROOT))
    # the checkout for every subprocess too (pytest, the benchmark's memory children): no install needed
    os.environ["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH")) if x)
    import hosts

    selected = list(hosts.HOSTS) if args.hosts is None else [h for h in args.hosts.split(",") if h]
    for name in selected:
        if name not in hosts.HOSTS:
            p.error(f"--hosts must name hosts among {', '.join(hosts.HOSTS)}, got {name!r}")
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import bench_logprobs as bench
    import torch

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    where = SimpleNamespace(
        hosts=selected,
        venvs=Path(args.venvs).resolve() if args.venvs else None,
        site=Path(args.site).resolve() if args.site else None,
    )
    cfg = SimpleNamespace(**vars(DRY if args.dry_run else REAL), where=where)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    started = time.time()
    device = torch.device("cuda") if torch.cuda.is_available() and not args.dry_run else torch.device("cpu")
    report = {
        "meta": {
            "dry_run": args.dry_run,
            "machine": bench.machine_line(device),
            "torch": torch.__version__,
            "triton": triton_version,
            "python": platform.python_version(),
            "executable": sys.executable,
            "transformers": this_python()["transformers"],
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "parts": parts,
        },
        "parts": {},
    }
    functions = {
        "pytest": part_pytest,
        "kernels": part_kernels,
        "liger": part_liger,
        "autotune": part_autotune,
        "hosts": part_hosts,
    }
    for part in parts:
        t0 = time.time()
        print(f"[gpu-check] {part} ...", flush=True)
        entry = {"runtime": this_python()}
        try:
            entry["result"] = functions[part](cfg, args.dry_run, out)
        except Exception as exc:
            if isinstance(exc, _PartialError):
                entry["result"] = exc.result
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()
            print(f"[gpu-check] {part} FAILED: {entry['error'][:2000]}", file=sys.stderr, flush=True)
        entry["seconds"] = time.time() - t0
        report["parts"][part] = entry
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report["meta"]["seconds"] = time.time() - started
    (out / "gpu_report.json").write_text(json.dumps(report, indent=1, default=str))
    text = markdown(report)
    (out / "gpu_report.md").write_text(text)
    print(text)
    failed = [n for n, v in report["parts"].items() if "error" in v]
    if failed:
        print(f"gpu-check FAILED: {', '.join(failed)} (details in {out / 'gpu_report.json'})", file=sys.stderr)
        return 1
    print(f"report: {out / 'gpu_report.md'}, {out / 'gpu_report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
