"""``RiftSFTConfig``: TRL's ``SFTConfig`` whose ``loss_type`` also takes the RIFT losses.

The RIFT names are built from the core's registry (``_common.loss_variants()``, the single
source shared with MS-Swift): ``rift`` (eq. 5), ``rift_naive`` (eq. 1), and ``rift_<method>``
for RIFT on rewards normalized over whole groups of the dataset (eq. 6-8). ``"nll"`` and
``"dft"`` are TRL's own and behave exactly as in ``SFTConfig``.

Everything that would silently replace or starve the RIFT loss is refused here, when the
config is built (before a model or dataset loads), with the option and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from rift_losses import LEVELS

from .._common import GROUP_COLUMN, REWARD_COLUMN, loss_variants, one_of

#: TRL 1.16's own loss types (``chunked_nll`` is its deprecated alias of ``nll``).
TRL_LOSS_TYPES = ("nll", "dft", "chunked_nll")
#: RIFT loss type -> (core loss name, normalization or None), from the core's registry.
RIFT_LOSS_TYPES = loss_variants()


class RiftLossChoice:
    """What the SFT and GRPO configs share: which ``loss_type`` is a RIFT one, and ``rift_level``'s rule."""

    @property
    def is_rift(self) -> bool:
        """Whether ``loss_type`` is one of the RIFT loss types."""
        return self.loss_type in RIFT_LOSS_TYPES

    @property
    def rift_loss(self) -> tuple[str, str | None]:
        """``(core loss name, normalization or None)`` of a RIFT ``loss_type``."""
        return RIFT_LOSS_TYPES[self.loss_type]

    def _check_level_for_loss(self) -> None:
        """``rift_level`` other than ``"token"`` with a loss that ignores it: refused (it would be ignored)."""
        if not self.is_rift and self.rift_level != "token":
            raise ValueError(
                f"rift_level must stay 'token' unless loss_type is a RIFT loss, got rift_level={self.rift_level!r} "
                f"with loss_type={self.loss_type!r}: the option would be ignored"
            )


@dataclass
class RiftSFTConfig(RiftLossChoice, SFTConfig):
    """``SFTConfig`` plus the RIFT options (see the module docstring and docs/trl.md).

    Args (beyond ``SFTConfig``'s):
        loss_type: ``"nll"``, ``"dft"`` (TRL's), or one of :data:`RIFT_LOSS_TYPES`.
        rift_level: ``"token"`` (every target token weighted by its sample's reward) or
            ``"sequence"`` (the paper's head applied once to each response's summed log-prob).
        reward_column: the dataset column holding one finite reward per row.
        group_column: the column grouping rows for the normalized losses (else the prompt).
        rift_inplace_grad: when the loss is computed from materialized logits (not TRL's fused
            head), write their gradient over the logits buffer (training with grad only).
        rift_fused_head: how training steps avoid the logits: ``"rift"`` (default, also ``True``)
            rift-losses' chunked head, ``"trl"`` TRL's fused head, ``"false"`` (also ``False`` or
            ``RIFT_FUSED_HEAD=0``) materializes them.
    """

    loss_type: str = field(
        default="nll",
        metadata={
            "help": "Type of loss: TRL's 'nll' or 'dft', or a RIFT loss on the dataset's reward column: "
            + ", ".join(repr(name) for name in RIFT_LOSS_TYPES)
            + ".",
            "choices": [*TRL_LOSS_TYPES, *RIFT_LOSS_TYPES],
        },
    )
    rift_level: str = field(
        default="token",
        metadata={"help": "RIFT granularity: 'token' or 'sequence' (RIFT loss types only).", "choices": list(LEVELS)},
    )
    reward_column: str = field(
        default=REWARD_COLUMN, metadata={"help": "Dataset column with one finite reward per row (RIFT loss types)."}
    )
    group_column: str = field(
        default=GROUP_COLUMN,
        metadata={"help": "Dataset column grouping rows for the normalized RIFT losses (default: the prompt)."},
    )
    rift_inplace_grad: bool = field(
        default=True,
        metadata={"help": "On the logits path (not the fused LM head), write the logits gradient in place."},
    )
    rift_fused_head: str = field(
        default="rift",
        metadata={
            "help": "How training steps avoid building the logits: 'rift' (default) rift-losses' chunked LM head, "
            "'trl' TRL's fused LM head (it also logs entropy and mean_token_accuracy), 'false' materializes the "
            "logits (also RIFT_FUSED_HEAD=0). true/false are accepted for 'rift'/'false'.",
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self.rift_fused_head = _fused_head_choice(self.rift_fused_head)
        one_of("loss_type", self.loss_type, [*TRL_LOSS_TYPES, *RIFT_LOSS_TYPES])
        one_of("rift_level", self.rift_level, LEVELS)
        for name in ("reward_column", "group_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty column name, got {value!r}")
        self._check_level_for_loss()
        if self.is_rift:
            self._refuse_bypasses()

    def _refuse_bypasses(self) -> None:
        """Options that would drop the rewards or replace the RIFT loss: refused with the reason."""
        lt = f"loss_type={self.loss_type!r}"
        if self.packing or self.eval_packing:
            option = "packing" if self.packing else "eval_packing"
            raise ValueError(
                f"{option} must be False with {lt}, got True: TRL's packing keeps only the input_ids and labels "
                "columns (select_columns), so the rewards could not follow their tokens. Use padding_free=True "
                "(without packing), whose rewards follow their tokens, or train unpacked"
            )
        if self.padding_free and self.rift_level == "sequence":
            raise ValueError(
                f"padding_free must be False with rift_level='sequence' ({lt}), got True: a padding-free batch is one "
                "row of concatenated samples, so a per-sample (sequence) loss cannot be formed; use rift_level='token'"
            )
        if self.label_smoothing_factor:
            raise ValueError(
                f"label_smoothing_factor must be 0 with {lt}, got {self.label_smoothing_factor}: TRL computes a "
                "label-smoothed cross-entropy in place of the trainer's loss, which would replace RIFT"
            )
        liger = self.liger_kernel_config or {}
        if self.use_liger_kernel and liger.get("fused_linear_cross_entropy"):
            raise ValueError(
                f"liger_kernel_config['fused_linear_cross_entropy'] must be False with {lt}, got True: Liger's fused "
                "linear cross-entropy replaces the model's forward and returns its own loss, bypassing RIFT"
            )


#: The values of ``rift_fused_head`` (True and False are read as "rift" and "false").
FUSED_HEADS = ("rift", "trl", "false")


def _fused_head_choice(value) -> str:
    if isinstance(value, bool):
        return "rift" if value else "false"
    lowered = value.lower() if isinstance(value, str) else value
    lowered = {"true": "rift"}.get(lowered, lowered)
    if lowered not in FUSED_HEADS:
        raise ValueError(f"rift_fused_head must be one of {', '.join(map(repr, FUSED_HEADS))}, got {value!r}")
    return lowered
