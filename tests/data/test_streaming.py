"""Streaming at scale: bounded memory on 1,000,000 rows (measured), atomic output, progress display.

The memory figures are peak RSS of the real command in a fresh interpreter (``ru_maxrss`` of
the child), printed with ``-s``; the assertions bound how much more a 100x larger file may take.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from datahelpers import CLI, run_subprocess

K = 8  # responses per problem
BIG, SMALL = 1_000_000, 10_000
# Peak RSS may grow by this much from 10,000 to 1,000,000 rows (the file is ~90 MB). What grows
# is the per-problem table of stats/normalize/convert: 125,000 problems x 16-32 bytes = 2-4 MB.
ALLOWED_GROWTH_MB = 16

_MEASURE = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
)


def _write_buffer(path, rows: int, *, bad_line: int | None = None) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            if i + 1 == bad_line:
                f.write('{"prompt": "broken row\n')
                continue
            p = i // K
            ok = (i * 7 + p) % 3 != 0
            f.write(
                f'{{"prompt": "Problem {p}: what is {p % 97} + {p % 89}?", "response": "{p % 97} + {p % 89} = '
                f'{p % 97 + p % 89 + (0 if ok else 1)}. The answer is {p % 97 + p % 89 + (0 if ok else 1)}.", '
                f'"reward": {1.0 if ok else -0.2}}}\n'
            )


@pytest.fixture(scope="module")
def buffers(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    _write_buffer(d / "small.jsonl", SMALL)
    _write_buffer(d / "big.jsonl", BIG)
    return d


def _peak_rss_mb(*args) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, *CLI, *map(str, args), "--progress", "none"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip().splitlines()[-1]) / 1024


@pytest.mark.slow
@pytest.mark.parametrize("command", ["stats", "normalize", "convert"])
def test_memory_does_not_grow_with_rows(buffers, command):
    extra = {"stats": [], "normalize": ["--method", "gaussian"], "convert": ["--to", "swift"]}[command]
    peaks = {}
    for name in ("small", "big"):
        out = [] if command == "stats" else ["-o", buffers / f"{command}-{name}.out.jsonl"]
        start = time.monotonic()
        peaks[name] = _peak_rss_mb(command, buffers / f"{name}.jsonl", *out, *extra)
        seconds = time.monotonic() - start
        print(
            f"\n{command} {name} ({SMALL if name == 'small' else BIG:,} rows): peak RSS {peaks[name]:.1f} MB, "
            f"{seconds:.1f} s"
        )
    size_mb = os.path.getsize(buffers / "big.jsonl") / 2**20
    growth = peaks["big"] - peaks["small"]
    print(f"{command}: +{growth:.1f} MB peak RSS for 100x the rows (input {size_mb:.0f} MB)")
    assert growth < ALLOWED_GROWTH_MB, f"{command} peak RSS grew by {growth:.1f} MB from {SMALL:,} to {BIG:,} rows"
    if command != "stats":
        with open(buffers / f"{command}-big.out.jsonl", "rb") as out:
            assert sum(1 for _ in out) == BIG  # and it wrote every row


@pytest.mark.slow
def test_label_memory_does_not_grow_with_rows(tmp_path):
    """label grades ~1 ms a row (math-verify), so 1,000 vs 20,000 rows; the reader/writer are the ones above."""
    peaks = {}
    for rows in (1_000, 20_000):
        src = tmp_path / f"{rows}.jsonl"
        with open(src, "w") as f:
            for i in range(rows):
                f.write(
                    f'{{"prompt": "q{i // K}", "response": "The answer is \\\\boxed{{{i % 13}}}.", "answer": '
                    f'"{i % 11}"}}\n'
                )
        peaks[rows] = _peak_rss_mb("label", src, "-o", tmp_path / f"{rows}.out.jsonl")
        print(f"\nlabel {rows:,} rows: peak RSS {peaks[rows]:.1f} MB")
    assert peaks[20_000] - peaks[1_000] < ALLOWED_GROWTH_MB


@pytest.mark.slow
def test_a_bad_row_mid_file_leaves_no_half_file(tmp_path):
    src = tmp_path / "in.jsonl"
    _write_buffer(src, 200_000, bad_line=100_001)
    out = tmp_path / "out.jsonl"
    out.write_text("the previous, complete output\n")
    proc = run_subprocess("convert", src, "-o", out, "--to", "swift", "--progress", "none")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(f"rift-losses convert: error: {src}:100001: invalid JSON")
    assert out.read_text() == "the previous, complete output\n"  # 100,000 rows had been written to the temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # and it is gone


@pytest.mark.slow
def test_a_killed_run_leaves_no_half_file(buffers, tmp_path):
    """SIGKILL mid-write: the output is the old one (or absent), never a prefix of the new one."""
    out = tmp_path / "out.jsonl"
    out.write_text("the previous, complete output\n")
    proc = subprocess.Popen(
        CLI + ["convert", str(buffers / "big.jsonl"), "-o", str(out), "--to", "swift"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            tmp = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
            if tmp and tmp[0].stat().st_size > 1 << 20:  # 1 MB of the new output written
                break
            assert proc.poll() is None, "convert finished before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("convert wrote no temporary output within 120 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.read_text() == "the previous, complete output\n"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "out.jsonl"]
    assert all(n.startswith(".out.jsonl.") and n.endswith(".tmp") for n in leftovers)  # hidden, never the output's name


def test_progress_bar_on_a_terminal(buffers):
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(CLI + ["stats", str(buffers / "small.jsonl")], stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
    screen = b"".join(chunks).decode()
    assert "\r" in screen and "stats [" in screen and "100% 10,000 lines" in screen


def test_plain_progress_lines_when_piped(buffers):
    proc = run_subprocess("stats", buffers / "small.jsonl", env={"RIFT_LOSSES_PROGRESS_SECONDS": "0"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert "\r" not in proc.stderr and len(lines) >= 100
    assert lines[-1].startswith("stats: 10,000 lines read (100%)")
    assert proc.stdout.startswith(f"{buffers / 'small.jsonl'}: 10,000 responses to 1,250 problems (8 per problem")
    quiet = run_subprocess("stats", buffers / "small.jsonl")  # default: a line every 10 s, none for a short run
    assert quiet.stderr == ""
