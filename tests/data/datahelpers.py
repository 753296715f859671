"""Helpers for the `rift-losses` command tests: files, and the CLI in-process or as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "rift_losses.data"]
#: The installed console script (``[project.scripts]``), beside this interpreter.
ENTRY = str(Path(sys.executable).with_name("rift-losses"))


def write_jsonl(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


class Result:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def json(self):
        return json.loads(self.out)


def make_runner(capsys):
    """Run ``rift-losses ARGS`` in this process (no start-up cost); returns exit code, stdout, stderr."""
    from rift_losses.data.cli import main

    def _run(*args) -> Result:
        argv = [str(a) for a in args]
        code = main(argv if "--progress" in argv else argv + ["--progress", "none"])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return _run


def run_subprocess(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    """Run the real command in a fresh interpreter (for memory, signals, terminals)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, env=full_env, **kwargs)


def run_command(*args, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed ``rift-losses`` entry point as a subprocess (``--progress none`` unless given)."""
    argv = [str(a) for a in args]
    if "--version" not in argv and "--progress" not in argv:
        argv += ["--progress", "none"]
    return subprocess.run([ENTRY, *argv], capture_output=True, text=True, **kwargs)
