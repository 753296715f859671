"""What only the tests need to start processes: a free port, and the exit-abort retry (issue 17).

Importable from every test folder (``tests/conftest.py`` puts this folder on ``sys.path``); never
part of a built wheel.

The exit abort: multi-process CPU runs over gloo (torchrun, accelerate, DeepSpeed, the hosts' CLIs)
under torch 2.13 were seen to die with SIGABRT and ``terminate called without an active exception``
while tearing down, after their work was done (2 of about 15 such runs in one ``make test`` on
2026-12-03; 3 of 6 pytest runs of ``tests/core/test_fsdp.py`` that day). It is C++ ``std::terminate``
on a joinable ``std::thread`` at process exit. On 2026-12-04 it did not reproduce on the same 2-core
machine under load 9-18: 0 of 24 direct ``torchrun`` runs of ``tests/core/fsdp_worker.py`` (captured
output, as the tests run it), 0 of 30 runs of a plain gloo all-reduce script that exits without
``destroy_process_group`` (the pattern of pytorch/pytorch#190489), 0 of 8 pytest runs of
``test_fsdp.py`` with every retry logged. Later that day a fresh-clone CI run (load from other tests
beside it) retried one ``torchrun`` of ``tests/core/fsdp_worker.py``, a script that does call
``destroy_process_group()``: so that call alone does not prevent it. The cause is not pinned down
(docs/distributed.md lists what is known); the summary now shows the output around each abort.
The retry stays here, in the tests only, and is never silent: every retry is recorded and listed
in pytest's terminal summary (``tests/conftest.py``), so a CI log shows it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

#: What a process prints when C++ ``std::terminate`` runs on a joinable thread at exit.
EXIT_ABORT = "terminate called without an active exception"

#: Every retry of this test session: (command, exit status of the aborted run, the lines around the abort).
RETRIES: list[tuple[str, int, str]] = []


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it), for a rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_command(cmd, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, **kwargs)``, run once more if it died of :data:`EXIT_ABORT`.

    Only that signature is retried, once, and the retry's result is what the test checks: a run that
    fails any other way, or aborts twice, still fails. ``kwargs`` must capture the output as text
    (``capture_output=True, text=True``) for the signature to be seen. Each retry is recorded in
    :data:`RETRIES` and reported at the end of the session.
    """
    done = subprocess.run(cmd, **kwargs)
    output = (done.stdout or "") + (done.stderr or "") if isinstance(done.stdout or "", str) else ""
    if done.returncode != 0 and EXIT_ABORT in output:
        shown = " ".join(map(str, cmd))
        at = output.rfind(EXIT_ABORT)
        RETRIES.append((shown, done.returncode, output[max(0, at - 1200) : at + 600]))
        print(f"tests/harness.py: {EXIT_ABORT!r} (exit {done.returncode}); running once more: {shown}", file=sys.stderr)
        done = subprocess.run(cmd, **kwargs)
    return done


def leave_without_teardown() -> None:
    """End a multi-process worker script whose outputs are written and closed: ``os._exit(0)``.

    Destroys the process group (when one is up), flushes stdout and stderr, and leaves without the
    interpreter's teardown, where gloo's threads can still be joinable when C++ destroys them (the
    exit abort above, docs/distributed.md). Call it only after the script's last collective and its
    last write.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)
