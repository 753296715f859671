"""Benchmark: what the zero-flag registration costs an interpreter (prints figures; not a test).

    .venvs/swift/bin/python benchmarks/bench_startup.py [--runs 40]

1. ``-X importtime``: the self + cumulative time of importing ``_rift_losses_hook`` (the whole
   cost of the ``rift_losses.pth`` line: reading the module and installing the finder).
2. Wall time of ``python -c pass``, interleaved, with ``RIFT_LOSSES_AUTOLOAD=1`` and ``=0``
   (the module is imported either way; ``=0`` skips installing the finder).
3. The finder's cost on every later import: ``find_spec`` calls per second, times the number of
   modules ``swift sft`` imports before training.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def importtime(env) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], env=env, capture_output=True, text=True)
    for line in out.stderr.splitlines():
        if line.rstrip().endswith("_rift_losses_hook"):
            self_us, cumulative_us, _ = (p.strip() for p in line.split("|"))
            return int(self_us.split(":")[-1]), int(cumulative_us)
    raise SystemExit("_rift_losses_hook not imported at start-up: is rift_losses.pth installed?")


def wall(env) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    runs = parser.parse_args().runs
    # Bytecode cached as after `pip install` (in a private prefix, so the tree stays clean);
    # PYTHONDONTWRITEBYTECODE=1 would recompile the hook from source at every start.
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    base["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="rift_bench_pyc_")
    on = dict(base, RIFT_LOSSES_AUTOLOAD="1")
    off = dict(base, RIFT_LOSSES_AUTOLOAD="0")
    print(f"python {sys.version.split()[0]} at {sys.executable}; load average {os.getloadavg()[0]:.2f}")

    for label, env in (
        ("bytecode cached", on),
        ("no bytecode cache", dict(on, PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=tempfile.mkdtemp())),
    ):
        importtime(env)  # writes the cache in the first case
        samples = [importtime(env) for _ in range(runs)]
        print(
            f"-X importtime _rift_losses_hook ({label}): self {statistics.median(s for s, _ in samples):.0f} us, "
            f"cumulative {statistics.median(c for _, c in samples):.0f} us (median of {runs})"
        )

    wall(on), wall(off)  # warm the file cache
    t_on, t_off = [], []
    for _ in range(runs):
        t_on.append(wall(on))
        t_off.append(wall(off))
    print(
        f"python -c pass: autoload on {statistics.median(t_on) * 1e3:.2f} ms, off "
        f"{statistics.median(t_off) * 1e3:.2f} ms, "
        f"difference of medians {(statistics.median(t_on) - statistics.median(t_off)) * 1e3:+.2f} ms (n={runs} each)"
    )

    import _rift_losses_hook as hook

    finder = next(f for f in sys.meta_path if isinstance(f, hook._Finder))
    n = 200_000
    start = time.perf_counter()
    for _ in range(n):
        finder.find_spec("some.module.name")
    per_call = (time.perf_counter() - start) / n
    count = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, swift.pipelines.train.sft, swift.trainers.seq2seq_trainer; print(len(sys.modules))",
        ],
        env=on,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(
        f"finder.find_spec on a non-trigger name: {per_call * 1e9:.0f} ns; x {count} modules of `swift sft` "
        f"= {per_call * int(count) * 1e3:.2f} ms per run"
    )


if __name__ == "__main__":
    main()
