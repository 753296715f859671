"""Forward + backward of a RIFT loss on three ways of getting token log-probs, side by side.

Run: ``make bench`` (CPU table) or ``python benchmarks/bench_logprobs.py [--device cuda]``.

Paths, each ending in the same RIFT terms (eq. 5, per token, mean over target tokens):

- ``rift_loss``: this package's public loss (``token_logprobs`` with ``impl="auto"``).
- ``rift_loss, in-place grad``: the same terms on ``token_logprobs(..., inplace_grad=True)``
  (the logits buffer becomes its gradient).
- ``torch CE none``: ``-F.cross_entropy(logits, labels, reduction="none")`` on the same logits.
- ``log_softmax(float)+gather``: ``log_softmax(logits.float(), -1).gather(...)``.
- on CUDA also ``rift_loss, impl=torch`` (the chunked fallback) and a device copy of the
  logits (the bandwidth reference of the 3-pass bound).

Time: forward + backward (``torch.autograd.grad`` of the loss with respect to the logits), run
round robin over the paths (one warm-up round, then ``--repeats`` rounds) so that a load change
on a shared machine hits every path alike; median and min. CUDA: CUDA events.

Peak extra memory: memory above the inputs (logits, labels, rewards) at the highest point of
one forward + backward, the logits gradient included.
- CUDA: ``torch.cuda.max_memory_allocated()`` minus the allocation before the call.
- CPU: a fresh subprocess per case with glibc's mmap threshold fixed at 64 KiB
  (``MALLOC_MMAP_THRESHOLD_``), so every tensor of 64 KiB or more is its own mapping, mapped when
  allocated and returned to the system when freed: the resident set size (RSS) follows the live
  tensors. The child builds the inputs, runs the case once (warm-up: thread pools, lazy
  initialisation), then resets the kernel's RSS high-water mark (``echo 5 >
  /proc/self/clear_refs``), runs the case again and reports ``VmHWM - VmRSS`` from
  ``/proc/self/status``.
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

import torch
import torch.nn.functional as F

import rift_losses

IGNORE = -100
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CE = "torch CE none"


# ------------------------------------------------------------------------------------- losses


def rift_terms(logp: torch.Tensor, labels: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """RIFT (eq. 5) per token, mean over target tokens: the same math as ``rift_loss``."""
    mask = labels != IGNORE
    r_tok = torch.where(mask, rewards[:, None].expand_as(logp), 0.0)
    terms = rift_losses.LOSSES["rift"](logp, r_tok) * mask
    return terms.sum() / mask.sum().clamp(min=1)


def ours(logits, labels, rewards):
    return rift_losses.rift_loss(logits, labels, rewards)


def ours_torch(logits, labels, rewards):
    return rift_terms(rift_losses.token_logprobs(logits, labels, impl="torch"), labels, rewards)


def ours_inplace(logits, labels, rewards):
    return rift_terms(rift_losses.token_logprobs(logits, labels, inplace_grad=True), labels, rewards)


def torch_ce(logits, labels, rewards):
    V = logits.shape[-1]
    logp = -F.cross_entropy(logits.view(-1, V), labels.view(-1), reduction="none", ignore_index=IGNORE)
    return rift_terms(logp.view(labels.shape), labels, rewards)


def float_log_softmax(logits, labels, rewards):
    mask = labels != IGNORE
    logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp_min(0)[..., None])[..., 0] * mask
    return rift_terms(logp, labels, rewards)


PATHS = {
    "rift_loss (ours)": ours,
    "rift_loss, in-place grad": ours_inplace,
    CE: torch_ce,
    "log_softmax(float)+gather": float_log_softmax,
}
CUDA_ONLY = {"rift_loss, impl=torch": ours_torch}
INPLACE = {"rift_loss, in-place grad"}


# ------------------------------------------------------------------------------------- inputs


def make_inputs(B, T, V, dtype, device, mask_kind, seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    logits = torch.empty(B, T, V, dtype=dtype, device=device)
    for b in range(B):  # in slices: no float32 temporary of the whole logits
        logits[b].copy_(torch.randn(T, V, generator=gen).mul_(2.0))
    labels = torch.randint(0, V, (B, T), generator=gen)
    if mask_kind == "prefix":  # the first quarter of every sample: a prompt
        labels[:, : T // 4] = IGNORE
    else:  # a random quarter of all positions
        labels.view(-1)[torch.randperm(B * T, generator=gen)[: B * T // 4]] = IGNORE
    rewards = torch.where(torch.arange(B) % 2 == 0, 1.0, -0.2)
    return logits, labels.to(device), rewards.to(device)


def fwd_bwd(fn, logits, labels, rewards):
    loss = fn(logits, labels, rewards)
    (grad,) = torch.autograd.grad(loss, logits)
    return loss.detach(), grad


def reference_loss(logits, labels, rewards, rows=512):
    """The RIFT loss in float64, ``rows`` rows at a time on the logits' device (agreement column)."""
    V = logits.shape[-1]
    with torch.no_grad():
        flat, y = logits.reshape(-1, V), labels.reshape(-1).clamp_min(0)
        logp = torch.cat(
            [
                torch.log_softmax(flat[i : i + rows].double(), -1).gather(-1, y[i : i + rows, None])[:, 0]
                for i in range(0, flat.shape[0], rows)
            ]
        ).view(labels.shape)
        mask = labels != IGNORE
        logp = logp * mask
        r_tok = torch.where(mask, rewards[:, None].double().expand_as(logp), 0.0)
        terms = -r_tok * torch.where(r_tok > 0, logp, logp.exp()) * mask
        return float(terms.sum() / mask.sum().clamp(min=1))


# ------------------------------------------------------------------------------ peak memory


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_memory(args):
    """Subprocess entry: one case, prints {"peak_extra_bytes": ...} as JSON."""
    torch.set_num_threads(args.threads)
    logits, labels, rewards = make_inputs(args.B, args.T, args.V, DTYPES[args.dtype], "cpu", args.mask)
    logits.requires_grad_()
    fn = {**PATHS, **CUDA_ONLY}[args.child_path]
    pristine = logits.detach().clone() if args.child_path in INPLACE else None
    _, grad = fwd_bwd(fn, logits, labels, rewards)  # warm-up
    del grad
    if pristine is not None:
        with torch.no_grad():
            logits.copy_(pristine)
    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    _, grad = fwd_bwd(fn, logits, labels, rewards)
    peak = _status_kib("VmHWM")
    del grad
    print(json.dumps({"peak_extra_bytes": (peak - base) * 1024}))


def cpu_peak_extra(args, dtype_name, path):
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child-path",
        path,
        "--dtype",
        dtype_name,
        "--B",
        str(args.B),
        "--T",
        str(args.T),
        "--V",
        str(args.V),
        "--mask",
        args.mask,
        "--threads",
        str(args.threads),
    ]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_extra_bytes"]


def cuda_peak_extra(fn, logits, labels, rewards):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    _, grad = fwd_bwd(fn, logits, labels, rewards)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del grad
    return peak


# ----------------------------------------------------------------------------------- timing


def timed(fn, logits, labels, rewards, cuda):
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        loss, grad = fwd_bwd(fn, logits, labels, rewards)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end), float(loss)
    t0 = time.perf_counter()
    loss, grad = fwd_bwd(fn, logits, labels, rewards)
    t1 = time.perf_counter()
    del grad
    return (t1 - t0) * 1e3, float(loss)


def copy_ms(logits, repeats):
    dst = torch.empty_like(logits)
    times = []
    for _ in range(repeats + 1):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(logits)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    del dst
    return statistics.median(times[1:])


def machine_line(device):
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        name += f", {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return f"{name}; torch {torch.__version__}"


def load_line():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def measure(args, device, dtype_name, paths=None):
    """Time and peak extra memory of every path (default: PATHS, plus CUDA_ONLY on CUDA); raw data."""
    cuda = device.type == "cuda"
    dtype = DTYPES[dtype_name]
    if paths is None:
        paths = dict(PATHS)
        if cuda:
            paths.update(CUDA_ONLY)
    logits, labels, rewards = make_inputs(args.B, args.T, args.V, dtype, device, args.mask)
    pristine = logits.clone()
    logits.requires_grad_()
    ref = reference_loss(logits.detach(), labels, rewards) if args.check else None
    load_before = load_line()
    times = {name: [] for name in paths}
    losses = {}
    for rep in range(args.repeats + 1):
        for name, fn in paths.items():
            ms, loss = timed(fn, logits, labels, rewards, cuda)
            if name in INPLACE:
                with torch.no_grad():
                    logits.copy_(pristine)
            if rep > 0:
                times[name].append(ms)
            losses[name] = loss
    load_after = load_line()
    peaks = {}
    for name, fn in paths.items():
        if cuda:
            peaks[name] = cuda_peak_extra(fn, logits, labels, rewards)
            if name in INPLACE:
                with torch.no_grad():
                    logits.copy_(pristine)
        else:
            peaks[name] = cpu_peak_extra(args, dtype_name, name)
    logits_bytes = logits.numel() * logits.element_size()
    copy = copy_ms(logits.detach(), args.repeats) if cuda else None
    del pristine, logits
    return {
        "times": times,
        "peaks": peaks,
        "losses": losses,
        "ref": ref,
        "copy_ms": copy,
        "logits_bytes": logits_bytes,
        "load": (load_before, load_after),
    }


def run_dtype(args, device, dtype_name):
    cuda = device.type == "cuda"
    m = measure(args, device, dtype_name)
    times, peaks, losses, ref, copy = m["times"], m["peaks"], m["losses"], m["ref"], m["copy_ms"]
    logits_bytes, (load_before, load_after) = m["logits_bytes"], m["load"]
    paths = times

    N = args.B * args.T
    print()
    print(
        f"== {device.type}: N={N} (B={args.B} x T={args.T}), V={args.V}, {dtype_name}, "
        f"{'first quarter of each sample' if args.mask == 'prefix' else 'a random quarter of the'} labels -100, "
        f"rewards +1.0/-0.2 by sample; logits {logits_bytes / 1e6:.1f} MB"
    )
    print(f"   machine: {machine_line(device)}")
    print(
        f"   load average (1, 5, 15 min): before {load_before}, after {load_after}; "
        f"{args.repeats} repeats after 1 warm-up, round robin"
    )
    head = f"{'path':<28} {'median ms':>10} {'min ms':>9} {'x CE':>6} {'peak extra MB':>14} {'x CE':>6}"
    if cuda:
        head += f" {'eff. TB/s (3 passes)':>21} {'bound/time':>10}"
    if ref is not None:
        head += f" {'|loss - fp64|':>14}"
    print(head)
    ce_med = statistics.median(times[CE])
    ce_peak = peaks[CE]
    results = {}
    for name in paths:
        med, mn = statistics.median(times[name]), min(times[name])
        peak = peaks[name]
        row = f"{name:<28} {med:>10.1f} {mn:>9.1f} {med / ce_med:>6.2f}"
        if peak is None or not ce_peak:
            row += f" {'n/a':>14} {'n/a':>6}"
        else:
            row += f" {peak / 1e6:>14.1f} {peak / ce_peak:>6.2f}"
        if cuda:
            bound_ms = 3 * logits_bytes / (2 * logits_bytes / copy)
            row += f" {3 * logits_bytes / (med * 1e-3) / 1e12:>21.2f} {bound_ms / med:>10.2f}"
        if ref is not None:
            row += f" {abs(losses[name] - ref):>14.2e}"
        print(row)
        results[name] = (med / ce_med, None if peak is None or not ce_peak else peak / ce_peak)
    if cuda:
        print(
            f"   device copy of the logits: {copy:.2f} ms "
            f"({2 * logits_bytes / (copy * 1e-3) / 1e12:.2f} TB/s read+write); "
            f"3-pass bound {1.5 * copy:.2f} ms = {1.5 * copy / ce_med:.2f}x CE"
        )
    return results


def report_targets(device, all_results):
    name = "rift_loss (ours)"
    if device.type == "cuda":
        targets = [("bf16", "time", 0, 0.5), ("bf16", "peak extra memory", 1, 0.35)]
    else:
        targets = [("bf16", "time", 0, 1.0), ("bf16", "peak extra memory", 1, 0.5)]
    print()
    for dtype_name, what, i, limit in targets:
        if dtype_name not in all_results:
            continue
        ratio = all_results[dtype_name][name][i]
        verdict = "n/a" if ratio is None else ("PASS" if ratio <= limit else "FAIL")
        shown = "n/a" if ratio is None else f"{ratio:.2f}x"
        print(f"target ({device.type}, {dtype_name}): {name} {what} <= {limit}x torch CE none: {verdict} ({shown})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument(
        "--dtypes", default=None, help="comma-separated of bf16, fp16, fp32 (default: bf16,fp32 on CPU; bf16 on CUDA)"
    )
    p.add_argument("--B", type=int, default=None, help="samples (default 4 on CPU, 8 on CUDA)")
    p.add_argument("--T", type=int, default=None, help="tokens per sample (default 1024 on CPU, 2048 on CUDA)")
    p.add_argument("--V", type=int, default=None, help="vocabulary (default 32000 on CPU, 151936 on CUDA)")
    p.add_argument("--mask", choices=("prefix", "random"), default="prefix", help="which quarter of the labels is -100")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the float64 loss agreement column")
    p.add_argument("--child-path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="bf16", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child_path is not None:
        child_memory(args)
        return
    torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    cuda = device.type == "cuda"
    args.B = args.B or (8 if cuda else 4)
    args.T = args.T or (2048 if cuda else 1024)
    args.V = args.V or (151936 if cuda else 32000)
    dtypes = (args.dtypes or ("bf16" if cuda else "bf16,fp32")).split(",")
    print("rift-losses: forward + backward of a RIFT loss on three token log-prob paths")
    print(
        "peak extra memory: "
        + (
            "torch.cuda.max_memory_allocated above the inputs"
            if cuda
            else "RSS high-water mark above the inputs, fresh subprocess per case, MALLOC_MMAP_THRESHOLD_=65536"
        )
    )
    all_results = {d: run_dtype(args, device, d) for d in dtypes}
    report_targets(device, all_results)


if __name__ == "__main__":
    main()
