"""The RIFT statistics of the training logs: summed on device, summarized once per logging window.

Every host logs, beside its ``loss``, ``pos_loss`` and ``neg_loss`` (the parts of the loss from
positive and negative rewards; they add up to the logged ``loss``), ``pos_tokens`` and
``neg_tokens`` (target tokens of samples with r > 0 and r < 0) and ``neg_prob`` (mean p of the
negative-reward target tokens). The host's loss is a mean over ranks of what each rank's
``compute_loss`` returned (times the scale of :func:`.loss.logged_loss_scale`), per optimizer
step (training) or per evaluation batch; so are these.
"""

from __future__ import annotations

from collections.abc import Sequence

from rift_losses import LossStats

#: The logged statistics, from the core's :class:`rift_losses.LossStats` (one source for every host):
#: each field, with the ``neg_prob_sum``/``neg_prob_mean`` pair logged once as ``neg_prob``.
STAT_NAMES = tuple(dict.fromkeys(name.removesuffix("_sum").removesuffix("_mean") for name in LossStats._fields))


class StatsAccumulator:
    """Sums :class:`rift_losses.LossStats` over calls without a host sync (tensors stay on device).

    ``add(stats, scale=s)`` adds ``s * pos_loss`` and ``s * neg_loss`` (the loss parts as the host
    scales the loss it logs) and the token counts; ``totals()`` returns the summed 0-dim tensors
    in a fixed order (for one all-reduce) and ``reset()`` clears them.
    """

    FIELDS = ("pos_loss", "neg_loss", "pos_tokens", "neg_tokens", "neg_prob_sum", "updates")

    def __init__(self):
        self._sums = None

    def add(self, stats, *, scale: float = 1.0) -> None:
        import torch

        values = torch.stack(
            [
                stats.pos_loss.detach().float() * scale,
                stats.neg_loss.detach().float() * scale,
                stats.pos_tokens.detach().float(),
                stats.neg_tokens.detach().float(),
                stats.neg_prob_sum.detach().float(),
                torch.ones((), device=stats.pos_loss.device),
            ]
        )
        self._sums = values if self._sums is None else self._sums + values

    def totals(self, device=None):
        """The sums as a float32 tensor ``(len(FIELDS),)`` (zeros when nothing was added)."""
        import torch

        if self._sums is None:
            return torch.zeros(len(self.FIELDS), device=device)
        return self._sums if device is None else self._sums.to(device)

    def reset(self) -> None:
        self._sums = None


def stats_summary(totals: Sequence[float], *, units: float, world_size: int = 1) -> dict[str, float | None]:
    """Log values from summed :class:`StatsAccumulator` totals (already all-reduced over ranks).

    Loss parts are divided by ``world_size * units`` (the host logs its loss as a mean over
    ranks, per optimizer step or evaluation batch), token counts by ``units``;
    ``neg_prob`` is the mean probability of the negative-reward target tokens (None if none).
    """
    pos_loss, neg_loss, pos_tokens, neg_tokens, neg_prob_sum, _ = (float(t) for t in totals)
    if units <= 0:
        return dict.fromkeys(STAT_NAMES)
    return {
        "pos_loss": pos_loss / (world_size * units),
        "neg_loss": neg_loss / (world_size * units),
        "pos_tokens": pos_tokens / units,
        "neg_tokens": neg_tokens / units,
        "neg_prob": neg_prob_sum / neg_tokens if neg_tokens > 0 else None,
    }


class StatsWindow:
    """The statistics of one mode (``"train"`` or ``"eval"``) between two logs: the one window of every host.

    :meth:`add` after each loss; :meth:`summary` when the host logs: the sums are all-reduced
    over ranks (every rank logs at the same points, so the collective is safe) and divided by
    the optimizer steps since the last training log (``global_step`` is read from ``state``),
    or by the evaluation batches of the window (counted by :meth:`add`).
    """

    def __init__(self, mode: str):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.mode = mode
        self.acc = StatsAccumulator()
        self._first_step = None

    def add(self, stats, *, scale: float, global_step: int = 0) -> None:
        if self._first_step is None:
            self._first_step = global_step
        self.acc.add(stats, scale=scale)

    def reset(self) -> None:
        """Drop what the window holds."""
        self.acc.reset()
        self._first_step = None

    def summary(self, *, global_step: int = 0, device=None) -> dict[str, float]:
        """The window's log values (keys of :func:`stats_summary` that have a value); starts a new window."""
        import torch.distributed as dist

        totals = self.acc.totals(device).clone()
        first, self._first_step = self._first_step, None
        self.acc.reset()
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals, op=dist.ReduceOp.SUM)
            world = dist.get_world_size()
        values = totals.tolist()
        if self.mode == "train":
            units = global_step - first if first is not None else 0
        else:
            units = values[-1] / world  # evaluation batches per rank
        return {
            key: value
            for key, value in stats_summary(values, units=units, world_size=world).items()
            if value is not None
        }
