"""``rift-trl``: ``trl sft`` with RIFT registered explicitly, for sites that refuse ``.pth`` code.

Same arguments as ``trl sft`` (``rift-trl sft --config cfg.yaml``), with ``RIFT_LOSSES_AUTOLOAD=0``
or without the hook installed. It parses the arguments as ``trl sft`` does (TRL's own parser,
with :class:`~.config.RiftSFTConfig`), then runs ``accelerate launch`` on this file instead of
TRL's ``sft.py``: this file's ``__main__`` registers RIFT and runs TRL's ``sft.py`` unchanged.
"""

import os
import runpy
import sys

USAGE = "usage: rift-trl sft [--config cfg.yaml] [trl sft arguments]"


def main(argv=None) -> None:
    """Entry point of ``rift-trl``."""
    from rift_losses.integrations.trl import _autoload

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "sft":
        raise SystemExit(f"rift-trl runs TRL's sft command only, got {argv[:1] or 'no command'}; {USAGE}")
    _autoload.install()
    from accelerate.commands.launch import launch_command, launch_command_parser
    from trl.cli.accelerate_config import resolve_accelerate_config_argument
    from trl.cli.commands.training import _subtract_subsequence
    from trl.scripts import sft

    # What trl.cli.commands.training.TrainingCommand.run does, with this file as the script.
    script_args = argv[1:]
    parser = sft.make_parser(prog="rift-trl sft")
    *_, config_remaining, cli_remaining = parser.parse_args_and_config(
        script_args, return_remaining_strings=True, separate_remaining_strings=True
    )
    launch_args = resolve_accelerate_config_argument(config_remaining + cli_remaining)
    training_script_args = _subtract_subsequence(script_args, cli_remaining)
    launch_command(launch_command_parser().parse_args(launch_args + [os.path.abspath(__file__)] + training_script_args))


def _worker() -> None:
    """The launched script: register RIFT, then run TRL's ``sft.py`` as ``__main__``."""
    from rift_losses.integrations.trl import _autoload

    _autoload.install()
    import trl.scripts

    runpy.run_path(os.path.join(os.path.dirname(trl.scripts.__file__), "sft.py"), run_name="__main__")


if __name__ == "__main__":
    _worker()
