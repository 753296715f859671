"""Session-wide test hooks: this folder on ``sys.path`` (for ``harness``), and the retry report."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter):
    import harness

    if harness.RETRIES:
        terminalreporter.section("exit-abort retries (tests/harness.py)")
        for cmd, code, around in harness.RETRIES:
            terminalreporter.write_line(f"exit {code}, ran once more: {cmd[:300]}")
            for line in around.splitlines():
                terminalreporter.write_line(f"    | {line}")
