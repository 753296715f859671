"""Benchmark: what rift-losses' zero-flag activation adds to start-up (prints figures; not a test).

Run in the LLaMA-Factory environment: ``.venvs/llamafactory/bin/python benchmarks/bench_lf_startup.py``.

1. Every interpreter: the ``.pth`` line imports ``_rift_losses_hook`` and installs its finder.
   Measured as the module's own import time (``-X importtime``, self and cumulative), and as
   ``python -c pass`` wall time with the finder installed vs ``RIFT_LOSSES_AUTOLOAD=0``.
2. Every import after start passes the finder (one dict lookup): measured in-process over
   the whole ``import llamafactory.train.tuner`` (thousands of imports) as the time spent in
   the finder's ``find_spec``.
3. A LLaMA-Factory process, when its parser is imported: registration (imports the core and
   the adapter's argument module, swaps the dataclass in), whether or not RIFT is asked for.
"""

import os
import statistics
import subprocess
import sys
import time

PY = sys.executable
N = int(os.environ.get("BENCH_REPEATS", "30"))


def _run(code, env=None, flags=()):
    return subprocess.run(
        [PY, *flags, "-c", code],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )


def importtime_of_hook():
    selfs, cums = [], []
    for _ in range(N):
        err = _run("pass", flags=("-X", "importtime")).stderr
        line = next(x for x in err.splitlines() if x.split("|")[-1].strip() == "_rift_losses_hook")
        s, c = (int(v.strip()) for v in line.split(":", 1)[1].split("|")[:2])
        selfs.append(s)
        cums.append(c)
    return statistics.median(selfs), statistics.median(cums)


def wall_pass():
    """``python -c pass`` wall times (ms), hook on and off, interleaved so load drift hits both."""
    times = {"on": [], "off": []}
    for _ in range(N):
        for key, env in (("on", {}), ("off", {"RIFT_LOSSES_AUTOLOAD": "0"})):
            t = time.perf_counter()
            _run("pass", env=env)
            times[key].append((time.perf_counter() - t) * 1e3)
    return times


_FINDER = r"""
import sys, time
import _rift_losses_hook as hook
finder = next(f for f in sys.meta_path if isinstance(f, hook._Finder))
spent = [0.0, 0]
original = hook._Finder.find_spec
def timed(self, *a, **k):
    t = time.perf_counter(); r = original(self, *a, **k); spent[0] += time.perf_counter() - t; spent[1] += 1
    return r
hook._Finder.find_spec = timed
t = time.perf_counter()
import llamafactory.train.tuner
total = time.perf_counter() - t
print(spent[0] * 1e3, spent[1], total * 1e3)
"""

_REGISTER = r"""
import sys, time
import llamafactory.hparams.parser
t = time.perf_counter()
from rift_losses.integrations.llamafactory import _autoload
_autoload.register()
print((time.perf_counter() - t) * 1e3)
"""


def main():
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"medians of {N} runs"
    )
    s, c = importtime_of_hook()
    print(f"1. import _rift_losses_hook at start: self {s / 1e3:.3f} ms, cumulative {c / 1e3:.3f} ms (-X importtime)")
    times = wall_pass()
    for key, label in (("on", "with the finder"), ("off", "RIFT_LOSSES_AUTOLOAD=0 (module imported, no finder)")):
        print(
            f"   python -c pass, {label}: median {statistics.median(times[key]):.1f} ms, min {min(times[key]):.1f} ms"
        )
    spent, calls, total = (float(v) for v in _run(_FINDER).stdout.split())
    print(
        f"2. finder on every later import: {spent:.2f} ms over {int(calls)} imports of llamafactory.train.tuner "
        f"(whole import {total:.0f} ms)"
    )
    times = sorted(float(_run(_REGISTER, env={"RIFT_LOSSES_AUTOLOAD": "0"}).stdout) for _ in range(5))
    print(
        f"3. registration when LLaMA-Factory's parser loads: {statistics.median(times):.1f} ms (median of 5; "
        "LLaMA-Factory's own start-up is several seconds)"
    )


if __name__ == "__main__":
    main()
