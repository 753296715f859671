"""``rift-trl``: ``trl sft`` / ``trl grpo`` with RIFT registered explicitly, for sites that refuse ``.pth`` code.

Same arguments as ``trl sft`` (``rift-trl sft --config cfg.yaml``) or ``trl grpo`` (``rift-trl grpo
--config cfg.yaml``: online RIFT), with ``RIFT_LOSSES_AUTOLOAD=0`` or without the hook installed. It
parses the arguments as TRL does (TRL's own parser, with :class:`~.config.RiftSFTConfig` or
:class:`~.grpo.RiftGRPOConfig`), then runs ``accelerate launch`` on this file instead of TRL's
script: this file's ``__main__`` registers RIFT and runs TRL's ``sft.py`` or ``grpo.py`` unchanged.
"""

import os
import runpy
import sys

#: rift-trl command -> the registration it needs (a function of :mod:`._autoload`).
COMMANDS = {"sft": "install", "grpo": "install_grpo"}
USAGE = "usage: rift-trl {sft,grpo} [--config cfg.yaml] [trl sft / trl grpo arguments]"


def main(argv=None) -> None:
    """Entry point of ``rift-trl``."""
    from rift_losses.integrations.trl import _autoload

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        raise SystemExit(f"rift-trl runs TRL's sft or grpo command, got {argv[:1] or 'no command'}; {USAGE}")
    command = argv[0]
    getattr(_autoload, COMMANDS[command])()
    import importlib

    from accelerate.commands.launch import launch_command, launch_command_parser
    from trl.cli.accelerate_config import resolve_accelerate_config_argument
    from trl.cli.commands.training import _subtract_subsequence

    # What trl.cli.commands.training.TrainingCommand.run does, with this file as the script.
    script_args = argv[1:]
    parser = importlib.import_module(f"trl.scripts.{command}").make_parser(prog=f"rift-trl {command}")
    *_, config_remaining, cli_remaining = parser.parse_args_and_config(
        script_args, return_remaining_strings=True, separate_remaining_strings=True
    )
    launch_args = resolve_accelerate_config_argument(config_remaining + cli_remaining)
    training_script_args = _subtract_subsequence(script_args, cli_remaining)
    worker = [os.path.abspath(__file__), command]
    launch_command(launch_command_parser().parse_args(launch_args + worker + training_script_args))


def _worker() -> None:
    """The launched script (``launcher.py COMMAND args...``): register RIFT, run TRL's ``COMMAND.py``."""
    from rift_losses.integrations.trl import _autoload

    command = sys.argv.pop(1) if len(sys.argv) > 1 and sys.argv[1] in COMMANDS else "sft"
    getattr(_autoload, COMMANDS[command])()
    import trl.scripts

    runpy.run_path(os.path.join(os.path.dirname(trl.scripts.__file__), f"{command}.py"), run_name="__main__")


if __name__ == "__main__":
    _worker()
