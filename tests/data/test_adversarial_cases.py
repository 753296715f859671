"""The cases of an adversarial run of the `rift-losses` command (issue 18), each through the real command.

1-2 references read whole or as text; 3 concurrent `convert --to llamafactory` into one
dataset_info.json; 4 one group key with the hosts; 5 read-only outputs, as root too; 6 broken
pipes and a killed `label --jobs 2`; 7 empty inputs; 8 a pathological answer; 9 `--version`
without torch. Each test failed on the code before the fix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from datahelpers import CLI, read_jsonl, run_command, write_jsonl


def _labelled(tmp_path, rows, *extra):
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    proc = run_command("label", src, "-o", tmp_path / "out.jsonl", "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), {r["response"]: r["reward"] for r in read_jsonl(tmp_path / "out.jsonl")}


# ------------------------------------------------------------------------------ 1, 2: grading


def test_1_a_plain_text_interval_tuple_or_list_is_never_its_last_number(tmp_path):
    rows = []
    for i, (ref, right, last_number) in enumerate(
        [("(1, 3]", "\\boxed{(1, 3]}", "\\boxed{3}"), ("(1, 2)", "\\boxed{(1, 2)}", "\\boxed{2}"),
         ("1, 2", "\\boxed{1, 2}", "\\boxed{2}")]
    ):  # fmt: skip
        rows += [
            {"prompt": f"q{i}", "response": f"{right} ({i})", "answer": ref},
            {"prompt": f"q{i}", "response": f"{last_number} ({i})", "answer": ref},
        ]
    summary, rewards = _labelled(tmp_path, rows)
    assert [rewards[r["response"]] for r in rows] == [1.0, -0.2] * 3
    assert summary["readings"] == {"math": 6, "text": 0}


def test_2_a_text_reference_is_compared_as_text_and_strict_catches_an_unreadable_one(tmp_path):
    rows = [
        {"prompt": "day", "response": "The answer is Monday.", "answer": "Monday"},
        {"prompt": "day", "response": "\\boxed{Dynamo}", "answer": "Monday"},  # the letters of Monday
        {"prompt": "ok", "response": "Yes", "answer": "yes"},
        {"prompt": "hi", "response": "\\boxed{Hello World}", "answer": "hello world"},
    ]
    summary, rewards = _labelled(tmp_path, rows)
    assert [rewards[r["response"]] for r in rows] == [1.0, -0.2, 1.0, 1.0]
    assert summary["readings"] == {"math": 0, "text": 4}
    summary, _ = _labelled(tmp_path, rows, "--audit")
    assert [(a["line"], a["reading"], a["as"]) for a in summary["audit"]] == [
        (1, "text", "'monday'"),
        (3, "text", "'yes'"),
        (4, "text", "'hello world'"),
    ]
    # neither math nor text: unlabelled, listed, and an error under --strict
    unreadable = {"prompt": "f", "response": "\\boxed{1}", "answer": "\\frac{a}{"}
    bad = write_jsonl(tmp_path / "bad.jsonl", [*rows, unreadable])
    proc = run_command("label", bad, "-o", tmp_path / "bad_out.jsonl", "--strict")
    assert proc.returncode == 1 and not (tmp_path / "bad_out.jsonl").exists()
    assert proc.stderr.strip() == (
        f"rift-losses label: error: {bad}: 1 row with a reference answer (field 'answer') that cannot be read whole "
        "as math or as text, line 5; nothing written (--strict)"
    )


# ------------------------------------------------------------------------- 3: dataset_info.json


def test_3_eight_parallel_converts_keep_all_eight_dataset_info_entries(tmp_path):
    rows = [{"prompt": f"q{i // 4}", "response": str(i), "reward": 1.0 if i % 2 else -0.2} for i in range(1000)]
    src = write_jsonl(tmp_path / "labelled.jsonl", rows)
    out = tmp_path / "data"
    out.mkdir()
    procs = [
        subprocess.Popen(
            [*CLI, "convert", str(src), "-o", str(out / f"part{i}.jsonl"), "--to", "llamafactory"]
            + ["--progress", "none"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in results]
    info = json.loads((out / "dataset_info.json").read_text())
    assert sorted(info) == [f"part{i}" for i in range(8)]
    assert all(info[f"part{i}"]["file_name"] == f"part{i}.jsonl" for i in range(8))
    assert sorted(os.listdir(out)) == sorted(["dataset_info.json", *(f"part{i}.jsonl" for i in range(8))])


# ------------------------------------------------------------------------------- 4: group ids


def test_4_group_ids_1_and_1_0_are_one_group_as_in_the_hosts(tmp_path):
    rows = [
        {"prompt": "a", "response": "x", "reward": 1.0, "group": 1},
        {"prompt": "a", "response": "y", "reward": -0.2, "group": 1.0},
        {"prompt": "b", "response": "z", "reward": 1.0, "group": 2.0},
        {"prompt": "b", "response": "w", "reward": 0.5, "group": 2.5},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    proc = run_command("normalize", src, "-o", tmp_path / "norm.jsonl", "--method", "gpg_mean", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["groups"] == 3
    # eq. 7, (N+/N) * (r - mu): group 1 is {1.0, -0.2}, mu = 0.4, N+/N = 1/2; 2 and 2.5 are groups of one
    assert [r["reward"] for r in read_jsonl(tmp_path / "norm.jsonl")] == pytest.approx([0.3, -0.3, 0.0, 0.0])
    proc = run_command("convert", src, "-o", tmp_path / "swift.jsonl", "--to", "swift")
    assert proc.returncode == 0, proc.stderr
    # written as the hosts compare them: numbers, an integral one as an int (never the string "1.0")
    assert [r["group"] for r in read_jsonl(tmp_path / "swift.jsonl")] == [1, 1, 2, 2.5]
    stats = run_command("stats", src, "--json")
    assert json.loads(stats.stdout)["problems"] == 3


def test_4_group_ids_mixing_numbers_and_strings_are_refused_naming_both_rows(tmp_path):
    rows = [
        {"prompt": "a", "response": "x", "reward": 1.0, "group": 1},
        {"prompt": "a", "response": "y", "reward": -0.2, "group": 1},
        {"prompt": "b", "response": "z", "reward": 1.0, "group": "1"},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    for command, extra in (
        ("stats", ()),
        ("normalize", ("-o", tmp_path / "n.jsonl", "--method", "gaussian")),
        ("convert", ("-o", tmp_path / "c.jsonl", "--to", "llamafactory")),
    ):
        proc = run_command(command, src, *extra)
        assert proc.returncode == 1, (command, proc.stdout)
        assert proc.stderr.strip() == (
            f"rift-losses {command}: error: {src}:3: field 'group' must hold one JSON type in every row (all strings "
            "or all numbers: the hosts' dataset loader refuses a mix, or reads \"1\" as 1), got '1' (a string) in "
            "line 3 and 1 (a number) in line 1"
        )
    assert not (tmp_path / "n.jsonl").exists() and not (tmp_path / "c.jsonl").exists()


# ------------------------------------------------------------------------ 5: read-only outputs


def test_5_read_only_outputs_are_refused_also_as_root(tmp_path):
    """No dropped capabilities here: as root (these tests usually are), the bits alone must refuse."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a", "response": "b", "reward": 1.0}])
    readonly = tmp_path / "readonly.jsonl"
    readonly.write_text("keep me\n")
    os.chmod(readonly, 0o444)
    ro_dir = tmp_path / "ro"
    ro_dir.mkdir()
    os.chmod(ro_dir, 0o555)
    try:
        proc = run_command("convert", src, "-o", readonly, "--to", "swift")
        assert proc.returncode == 1
        assert proc.stderr.strip() == (
            f"rift-losses convert: error: {readonly}: cannot write: Permission denied (the file is read-only)"
        )
        assert readonly.read_text() == "keep me\n"
        proc = run_command("normalize", src, "-o", ro_dir / "out.jsonl", "--method", "gaussian")
        assert proc.returncode == 1
        assert proc.stderr.strip() == (
            f"rift-losses normalize: error: {ro_dir / 'out.jsonl'}: cannot write: Permission denied (in directory "
            f"{str(ro_dir)!r})"
        )
        assert os.listdir(ro_dir) == []
    finally:
        os.chmod(ro_dir, 0o755)


# ------------------------------------------------------------------------------ 6: broken pipes


def test_6_stats_into_a_closed_pipe_ends_quietly_with_exit_0(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a", "response": "b", "reward": 1.0}])
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -4` that has already exited
    try:
        proc = subprocess.run(
            [*CLI, "stats", str(src), "--progress", "none"], stdout=write_end, stderr=subprocess.PIPE, text=True
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0
    assert proc.stderr == ""


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc (Linux)")
def test_6_kill_9_of_label_jobs_2_leaves_no_traceback_and_no_worker(tmp_path):
    rows = [
        {"prompt": f"q{i // 8}", "response": f"So it is \\boxed{{\\frac{{{i}}}{{7}}}}", "answer": str(i % 5)}
        for i in range(40000)
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    err = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115 (the workers inherit it)
    proc = subprocess.Popen(
        [*CLI, "label", str(src), "-o", str(tmp_path / "out.jsonl"), "--jobs", "2", "--progress", "plain"],
        stdout=subprocess.DEVNULL,
        stderr=err,
        env=dict(os.environ, RIFT_LOSSES_PROGRESS_SECONDS="0.2"),
    )
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            workers = [c for c in _children(proc.pid) if "spawn_main" in _cmdline(c)]
            if len(workers) == 2 and "lines read" in (tmp_path / "stderr.txt").read_text():
                break
        assert proc.poll() is None and len(workers) == 2, "label finished before it could be killed"
        time.sleep(1.0)  # the workers are grading a chunk
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.5)
        assert not any(_alive(w) for w in workers), "a grading worker outlived the killed command"
        time.sleep(1.0)  # anything a dying worker prints
    finally:
        err.close()
        if proc.poll() is None:
            proc.kill()
    text = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in text and "Error" not in text and "leaked" not in text, text
    assert not (tmp_path / "out.jsonl").exists()


# ----------------------------------------------------------------------------- 7: empty inputs


@pytest.mark.parametrize(
    "command,extra",
    [
        ("label", ("-o", "out.jsonl")),
        ("normalize", ("-o", "out.jsonl", "--method", "gaussian")),
        ("convert", ("-o", "out.jsonl", "--to", "llamafactory")),
        ("stats", ()),
    ],
)
def test_7_an_empty_input_is_an_error_naming_the_file(tmp_path, command, extra):
    src = tmp_path / "empty.jsonl"
    src.write_text("\n  \n")  # blank lines only
    proc = run_command(command, src, *(str(tmp_path / e) if e.endswith(".jsonl") else e for e in extra))
    assert proc.returncode == 1, proc.stdout
    written = "" if command == "stats" else "; nothing written"
    assert proc.stderr.strip() == (
        f"rift-losses {command}: error: {src}: must hold at least one row, got none (an empty file, or only blank "
        f"lines){written}"
    )
    assert sorted(os.listdir(tmp_path)) == ["empty.jsonl"]


# ------------------------------------------------------------------------ 8: a pathological answer


def test_8_a_pathological_answer_is_bounded_listed_and_not_written(tmp_path):
    rows = [
        {"prompt": "q", "response": "\\boxed{9^{9^{9^{9}}}}", "answer": "5"},
        {"prompt": "q", "response": "\\boxed{5}", "answer": "5"},
        {"prompt": "q", "response": "\\boxed{9^{9^{9^{9}}}}", "answer": "5"},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    proc = run_command("label", src, "-o", tmp_path / "out.jsonl", "--timeout", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # math-verify's own "Timeout during comparison" is not printed
    assert (
        "  timed out       2   not written: grading took more than --timeout 1 s (lines 1, 3); --strict makes this "
        "an error" in proc.stdout.splitlines()
    )
    assert [r["response"] for r in read_jsonl(tmp_path / "out.jsonl")] == ["\\boxed{5}"]
    proc = run_command("label", src, "-o", tmp_path / "strict.jsonl", "--timeout", "1", "--strict")
    assert proc.returncode == 1 and not (tmp_path / "strict.jsonl").exists()
    assert "2 responses whose grading took more than --timeout 1 s, lines 1, 3; nothing written" in proc.stderr


# --------------------------------------------------------------------------- 9: --version, --help


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["label", "--help"], ["normalize", "--help"]])
def test_9_version_and_help_do_not_import_torch(args):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "rift_losses.data", *args], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")]
    assert "rift_losses.data.cli" in imported
    assert not [m for m in imported if m.split(".")[0] in ("torch", "numpy", "math_verify", "sympy")]
    assert ("rift-losses 0.1.0" in proc.stdout) if args == ["--version"] else ("usage: rift-losses" in proc.stdout)
