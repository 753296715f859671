"""Output paths: checked before any input is read, never clobbering what they should not (issue 9, cases 1-5).

Every test runs the installed ``rift-losses`` entry point as a subprocess. The input of most
tests has a broken first row, so an error that names the output (and not ``in.jsonl:1``) shows
that the output was checked before the input was read.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from datahelpers import ENTRY, read_jsonl, run_command, write_jsonl

ROWS = [
    {"prompt": "What is 2+3?", "response": "2 + 3 = 5. The answer is 5.", "answer": "5", "reward": 1.0},
    {"prompt": "What is 2+3?", "response": "The answer is 6.", "answer": "5", "reward": -0.2},
]
WRITERS = {
    "label": ["label", "{src}", "-o", "{out}"],
    "normalize": ["normalize", "{src}", "-o", "{out}", "--method", "gpg_mean"],
    "convert": ["convert", "{src}", "-o", "{out}", "--to", "swift"],
}


def _args(command: str, src, out) -> list[str]:
    return [a.format(src=src, out=out) for a in WRITERS[command]]


def _broken_input(directory: Path) -> Path:
    path = directory / "in.jsonl"
    path.write_text('{"prompt": "broken\n')
    return path


def _no_temporary_files(directory: Path) -> bool:
    return not list(directory.rglob("*.tmp"))


# ------------------------------------------------------------------ case 1: non-regular outputs


@pytest.fixture
def short_dir():
    """A directory with a short path (a Unix socket's path must fit in 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="rl9"))
    yield d
    shutil.rmtree(d)


def _make(kind: str, path: Path):
    if kind == "fifo":
        os.mkfifo(path)
        return None
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock


@pytest.mark.parametrize("kind,what", [("fifo", "a FIFO (named pipe)"), ("socket", "a socket")])
@pytest.mark.parametrize("command", list(WRITERS))
def test_a_non_regular_output_is_refused_and_left_alone(short_dir, command, kind, what):
    target = short_dir / "o"
    handle = _make(kind, target)
    try:
        src = _broken_input(short_dir)
        proc = run_command(*_args(command, src, target), timeout=120)
        assert proc.returncode == 1, proc.stdout
        assert (
            proc.stderr.strip()
            == f"rift-losses {command}: error: {target}: is {what}, not a regular file; the output must be a "
            "regular file or a new path"
        )
        mode = os.lstat(target).st_mode
        assert stat.S_ISFIFO(mode) if kind == "fifo" else stat.S_ISSOCK(mode)  # not replaced by a regular file
        assert _no_temporary_files(short_dir)
    finally:
        if handle is not None:
            handle.close()


@pytest.mark.parametrize("command", list(WRITERS))
def test_a_device_output_is_refused(tmp_path, command):
    """`-o /dev/null` (as root, a rename would replace the device node).

    The broken input keeps even old code harmless.
    """
    src = _broken_input(tmp_path)
    proc = run_command(*_args(command, src, "/dev/null"))
    assert proc.returncode == 1, proc.stdout
    assert (
        proc.stderr.strip()
        == f"rift-losses {command}: error: /dev/null: is a character device, not a regular file; the output must "
        "be a regular file or a new path"
    )
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("command", list(WRITERS))
def test_a_symlinked_output_is_written_through_to_its_target(tmp_path, command):
    """Decided: like `sed -i --follow-symlinks`, the link stays and its target gets the new content."""
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "target.jsonl"
    target.write_text("old content\n")
    os.chmod(target, 0o640)
    link = tmp_path / "link.jsonl"
    link.symlink_to(Path("real") / "target.jsonl")
    proc = run_command(*_args(command, src, link))
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.readlink(link) == str(Path("real") / "target.jsonl")
    assert len(read_jsonl(target)) == 2 and "reward" in read_jsonl(target)[0]  # the target holds the new output
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # and keeps its permissions
    assert _no_temporary_files(tmp_path)


# ------------------------------------------------------------------ case 2: the output is the input


def _same_file_cases(tmp_path: Path, src: Path) -> dict[str, Path]:
    (tmp_path / "sub").mkdir()
    os.symlink(src, tmp_path / "sym.jsonl")
    os.link(src, tmp_path / "hard.jsonl")
    return {
        "same path": src,
        "symlink": tmp_path / "sym.jsonl",
        "hard link": tmp_path / "hard.jsonl",
        "other spelling": tmp_path / "sub" / ".." / "in.jsonl",
    }


@pytest.mark.parametrize("command", list(WRITERS))
def test_the_input_as_output_is_refused_without_in_place(tmp_path, command):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    before = src.read_bytes()
    for how, out in _same_file_cases(tmp_path, src).items():
        proc = run_command(*_args(command, src, out))
        assert proc.returncode == 1, (how, proc.stdout)
        assert proc.stderr.strip() == (
            f"rift-losses {command}: error: {out}: is the input file {src} (the same file); writing it would "
            "replace the input: "
            "choose another output, or pass --in-place to replace the input on success"
        ), how
        assert src.read_bytes() == before, how
    # stdin that is the output file
    with open(src, "rb") as stdin:
        proc = subprocess.run(
            [ENTRY, *_args(command, "-", src), "--progress", "none"], stdin=stdin, capture_output=True, text=True
        )
    assert proc.returncode == 1 and f"{src}: is the input file <stdin> (the same file)" in proc.stderr
    assert src.read_bytes() == before


def test_in_place_replaces_the_input_on_success(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    proc = run_command("convert", src, "-o", src, "--to", "swift", "--in-place")
    assert proc.returncode == 0, proc.stderr
    out = read_jsonl(src)
    assert [list(r) for r in out] == [["messages", "reward", "group"]] * 2 and [r["reward"] for r in out] == [1.0, -0.2]
    rows = [{k: v for k, v in r.items() if k != "reward"} for r in ROWS]
    lab = write_jsonl(tmp_path / "lab.jsonl", rows)
    os.symlink(lab, tmp_path / "sym.jsonl")
    proc = run_command("label", tmp_path / "sym.jsonl", "-o", lab, "--in-place")
    assert proc.returncode == 0, proc.stderr
    assert [r["reward"] for r in read_jsonl(lab)] == [1.0, -0.2] and (tmp_path / "sym.jsonl").is_symlink()
    assert _no_temporary_files(tmp_path)


# ------------------------------------------------------------------ case 3: bad output paths


@pytest.mark.parametrize("command", list(WRITERS))
def test_a_directory_as_output_fails_before_reading_the_input(tmp_path, command):
    src = _broken_input(tmp_path)
    (tmp_path / "d").mkdir()
    for out, cwd in (("d", tmp_path), (".", tmp_path), (str(tmp_path / "d") + "/", None)):
        proc = run_command(*_args(command, src, out), cwd=cwd)
        assert proc.returncode == 1, proc.stdout
        assert (
            proc.stderr.strip()
            == f"rift-losses {command}: error: {out}: is a directory; the output must be a file (-o DIR/NAME.jsonl)"
        )
        assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "in.jsonl"] and not list((tmp_path / "d").iterdir())


def test_a_file_in_the_way_of_the_output_directory(tmp_path):
    src = _broken_input(tmp_path)
    (tmp_path / "f").write_text("a file\n")
    proc = run_command("convert", src, "-o", tmp_path / "f" / "sub" / "out.jsonl", "--to", "swift")
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == f"rift-losses convert: error: {tmp_path / 'f' / 'sub' / 'out.jsonl'}: cannot write: "
        f"{str(tmp_path / 'f')!r} is not a directory"
    )


def _without_root_override():
    """Make the child obey permission bits even when the tests run as root.

    Root reads and writes any file through two capabilities (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH); dropping them from the bounding set before ``exec`` leaves the child
    the file owner's permissions only. A no-op for other users, who have neither.
    """
    if os.geteuid() != 0:
        return None

    def drop():
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")

    return drop


@pytest.mark.parametrize("command", list(WRITERS))
def test_missing_write_permission_is_a_message(tmp_path, command):
    src = _broken_input(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    os.chmod(ro, 0o555)
    proc = run_command(*_args(command, src, ro / "out.jsonl"), preexec_fn=_without_root_override())
    assert proc.returncode == 1, proc.stdout
    assert (
        proc.stderr.strip()
        == f"rift-losses {command}: error: {ro / 'out.jsonl'}: cannot write: Permission denied (in directory "
        f"{str(ro)!r})"
    )
    readonly = tmp_path / "readonly.jsonl"
    readonly.write_text("keep me\n")
    os.chmod(readonly, 0o444)
    proc = run_command(*_args(command, src, readonly), preexec_fn=_without_root_override())
    assert proc.returncode == 1, proc.stdout
    assert (
        proc.stderr.strip()
        == f"rift-losses {command}: error: {readonly}: cannot write: Permission denied (the file is read-only)"
    )
    assert readonly.read_text() == "keep me\n"


# ------------------------------------------------------------------ case 4: signals


def _ten_seconds_of_grading(src: Path) -> Path:
    """10,000 rows at ~1 ms each to grade; every response distinct (the grader caches repeated ones)."""
    with open(src, "w") as f:
        for i in range(10_000):
            response = f"The answer is \\boxed{{{i * 7 + 3}/{i % 13 + 2}}}."
            f.write(json.dumps({"prompt": f"q{i // 8}", "response": response, "answer": str(i % 11)}) + "\n")
    return src


def _as_in_a_terminal() -> None:
    """The child's SIGINT, SIGTERM and SIGHUP at their defaults, as for a command typed in a terminal.

    A test run started in the background by a shell without job control (``make test &`` in a
    script) inherits SIGINT ignored, and the command rightly keeps ignoring it (as under ``nohup``
    for SIGHUP; see the next test).
    """
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _start_label(src, out, *, preexec_fn) -> subprocess.Popen:
    """`rift-losses label src -o out` in a child, printing a progress line every 0.2 s on its stderr."""
    return subprocess.Popen(
        [ENTRY, "label", str(src), "-o", str(out), "--progress", "plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, RIFT_LOSSES_PROGRESS_SECONDS="0.2"),
        preexec_fn=preexec_fn,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: signal.Signals(s).name)
def test_a_signal_mid_label_removes_the_temporary_file(tmp_path, signum):
    """A real signal to the real command while it grades: old output intact, no hidden temporary file left."""
    src = _ten_seconds_of_grading(tmp_path / "rollouts.jsonl")
    out = tmp_path / "out.jsonl"
    out.write_text("the previous, complete output\n")
    proc = _start_label(src, out, preexec_fn=_as_in_a_terminal)
    try:
        first = proc.stderr.readline()  # a progress line: the input is being read and graded
        assert first.startswith("label: "), first
        time.sleep(0.5)
        temporary = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert temporary and temporary[0].startswith(".out.jsonl."), "no temporary output while grading"
        assert proc.poll() is None, "label finished before the signal"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum
    last = err.strip().splitlines()[-1]
    if signum == signal.SIGINT:
        assert last == "rift-losses label: interrupted; no output written"
    else:
        assert last == f"rift-losses label: stopped by {signal.Signals(signum).name}; no output written"
    assert out.read_text() == "the previous, complete output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "rollouts.jsonl"]


def test_under_nohup_a_hang_up_does_not_stop_label(tmp_path):
    """SIGHUP ignored at start (``nohup``) stays ignored; SIGTERM still stops the command cleanly."""
    src = _ten_seconds_of_grading(tmp_path / "rollouts.jsonl")

    def nohup() -> None:
        _as_in_a_terminal()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = _start_label(src, tmp_path / "out.jsonl", preexec_fn=nohup)
    try:
        assert proc.stderr.readline().startswith("label: ")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None, "a hang-up stopped label under nohup"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1] == "rift-losses label: stopped by SIGTERM; no output written"
    assert not (tmp_path / "out.jsonl").exists()


# ------------------------------------------------------------------ case 5: dataset_info.json first


@pytest.mark.parametrize(
    "content,message",
    [
        (
            b"{not json",
            "is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); fix "
            "or remove it, or pass --dataset-info",
        ),
        (b'["a list"]', "must hold a JSON object of datasets, got list"),
        (
            b'{"x": "\xff"}',
            "is not UTF-8 text (invalid start byte at byte 7); fix or remove it, or pass --dataset-info",
        ),
        (None, "is a directory; the output must be a file (-o DIR/NAME.jsonl)"),
    ],
    ids=["not JSON", "not an object", "not UTF-8", "a directory"],
)
def test_a_bad_dataset_info_fails_before_anything_is_written(tmp_path, content, message):
    info = tmp_path / "dataset_info.json"
    if content is None:
        info.mkdir()
    else:
        info.write_bytes(content)
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    proc = run_command("convert", src, "-o", tmp_path / "buffer.jsonl", "--to", "llamafactory")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"rift-losses convert: error: {info}: {message}"
    assert not (tmp_path / "buffer.jsonl").exists()  # the JSONL is not written either
    assert content is None or info.read_bytes() == content
    assert _no_temporary_files(tmp_path)


def test_an_unreadable_dataset_info_fails_before_anything_is_written(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    info = tmp_path / "dataset_info.json"
    info.write_text("{}")
    os.chmod(info, 0o200)  # writable, not readable
    proc = run_command(
        "convert", src, "-o", tmp_path / "buffer.jsonl", "--to", "llamafactory", preexec_fn=_without_root_override()
    )
    assert proc.returncode == 1, proc.stdout
    assert (
        proc.stderr.strip()
        == f"rift-losses convert: error: {info}: cannot read: Permission denied; fix its permissions, or pass "
        "--dataset-info"
    )
    assert not (tmp_path / "buffer.jsonl").exists()


def test_dataset_info_and_output_cannot_be_one_file(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "dataset_info.json"
    proc = run_command("convert", src, "-o", out, "--to", "llamafactory")
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        == f"rift-losses convert: error: {out}: is the output file {out} too; the dataset_info.json must be "
        "another file"
    )
    assert not out.exists()
