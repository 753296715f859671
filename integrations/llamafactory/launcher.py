"""``rift-llamafactory-cli``: ``llamafactory-cli`` with RIFT registered explicitly.

For sites that refuse ``.pth`` start-up code (or set ``RIFT_LOSSES_AUTOLOAD=0``): same
commands and arguments as ``llamafactory-cli`` (``rift-llamafactory-cli train cfg.yaml``).

When LLaMA-Factory re-launches training under torchrun (several devices, or
``FORCE_TORCHRUN=1``), it runs its own ``launcher.py`` as the worker script; this launcher
rewrites that one element of the torchrun command to ``-m
rift_losses.integrations.llamafactory.launcher``, whose ``__main__`` (below) registers RIFT
and then runs LLaMA-Factory's training exactly as LLaMA-Factory's worker does.
"""

import subprocess

WORKER = __name__ if __name__ != "__main__" else "rift_losses.integrations.llamafactory.launcher"


class _TorchrunThroughRift:
    """Stands in for ``subprocess`` inside ``llamafactory.launcher``: reroutes the worker script."""

    def __init__(self, worker_script: str):
        self.worker_script = worker_script

    def run(self, command, *args, **kwargs):
        command = list(command)
        if self.worker_script not in command:
            raise RuntimeError(
                f"rift-llamafactory-cli could not find LLaMA-Factory's worker script {self.worker_script!r} in the "
                f"torchrun command {command}; its workers would train without RIFT"
            )
        at = command.index(self.worker_script)
        command[at : at + 1] = ["-m", WORKER]
        return subprocess.run(command, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(subprocess, name)


def main() -> None:
    """Entry point of ``rift-llamafactory-cli``."""
    from . import _autoload

    _autoload.install()
    import llamafactory.launcher as lf_launcher
    from llamafactory.cli import main as lf_main

    lf_launcher.subprocess = _TorchrunThroughRift(lf_launcher.__file__)
    lf_main()


def _worker() -> None:
    """A torchrun worker: register, then train as ``llamafactory/launcher.py``'s own worker does."""
    from rift_losses.integrations.llamafactory import _autoload

    _autoload.install()
    from llamafactory.train.tuner import run_exp

    run_exp()


if __name__ == "__main__":
    _worker()
