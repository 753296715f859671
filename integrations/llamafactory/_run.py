"""A parsed ``use_rift_loss`` run: its options, and the keys that carry rewards (no host import).

A leaf of the adapter: :mod:`._args` attaches :class:`RiftConfig` to ``data_args`` after
parsing; :mod:`._data` and :mod:`._trainer` read it with :func:`config_of` and carry rewards
under the keys below.
"""

from dataclasses import dataclass

REWARD_IN, GROUP_IN = "_rift_reward", "_rift_group"  # after conversion, before processing
REWARD, GROUP = "rift_reward", "rift_group"  # processed rows (and tokenized_path)
#: Per-turn rewards: after conversion, one reward per trained message of a row (None: the row's
#: reward), and the row's name for errors; processed rows, one reward per token (aligned with
#: ``input_ids``) and the row's turn rewards (for the summary).
TURNS_IN, WHERE_IN = "_rift_turn_rewards", "_rift_where"
TOKEN_REWARDS, TURNS = "rift_token_rewards", "rift_turn_rewards"
#: LLaMA-Factory's distribution and the versions the patches are written for.
HOST = ("llamafactory", "0.9.3 to 0.9.5")


@dataclass(frozen=True)
class RiftConfig:
    """What the data pipeline and the trainer need to know, attached to ``data_args``."""

    loss: str
    normalization: str
    level: str

    @classmethod
    def from_args(cls, finetuning_args) -> "RiftConfig":
        return cls(finetuning_args.rift_loss, finetuning_args.rift_reward_normalization, finetuning_args.rift_level)


def config_of(data_args) -> RiftConfig | None:
    """The RIFT config of a parsed run (None when RIFT was not asked for)."""
    return getattr(data_args, "rift_config", None)
