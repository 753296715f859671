"""Template: copy each row's reward to its encoded sample, and collate the batch's rewards.

``Template.encode`` copies ``_rift_reward`` from the row to the encoded sample;
``Template.data_collator`` adds ``(B,)`` rewards for padded batches, ``(1, T)`` per-token rewards
for ``padding_free``/``packing`` (which rebuild the batch from a fixed set of keys). Also
installed in dataloader workers, which import the template but not the pipeline.
"""

from __future__ import annotations

from typing import Any

from .. import _common
from .._core.patching import wrap
from ._state import HOST, KEY


def _row_reward(inputs) -> Any:
    if isinstance(inputs, dict):
        return inputs.get(KEY)
    chosen = getattr(inputs, "chosen", None)
    extra = getattr(chosen, "extra_kwargs", None)
    return extra.get(KEY) if isinstance(extra, dict) else None


def collate_rewards(template, rows: list, res: dict):
    """The batch's reward tensor for the collated ``res`` of encoded ``rows`` (see module doc)."""
    import torch

    rewards, lengths = [], []
    for i, row in enumerate(rows):
        value = row.get(KEY) if isinstance(row, dict) else None
        if value is None:
            raise ValueError(
                f"every sample of a RIFT batch must carry a reward, got none in sample {i} of {len(rows)}: "
                "a dataset without rewards is mixed into a RIFT run"
            )
        rewards.append(float(value))
        lengths.append(len(row["input_ids"]))
    labels = res.get("labels")
    if getattr(template, "padding_free", False):
        tokens = _common.per_token_rewards(rewards, lengths)
        width = labels.shape[-1] if labels is not None else len(tokens)
        if width < len(tokens):
            raise ValueError(
                f"packed labels must cover every token of the packed samples, got {width} labels for {len(tokens)} "
                "tokens"
            )
        padding = [0.0] * (width - len(tokens))  # padding_to (MS-Swift pads packed rows on the padding side)
        tokens = tokens + padding if getattr(template, "padding_side", "right") == "right" else padding + tokens
        return torch.tensor(tokens, dtype=torch.float32)[None]
    if labels is not None and labels.shape[0] != len(rewards):
        raise ValueError(
            f"the collated batch must have one row per sample, got {labels.shape[0]} rows for {len(rewards)} samples"
        )
    return torch.tensor(rewards, dtype=torch.float32)


def install_template_patches() -> None:
    from swift.template.base import Template

    def make_encode(original):
        def encode(self, inputs, *args, **kwargs):
            encoded = original(self, inputs, *args, **kwargs)
            reward = _row_reward(inputs)
            if reward is not None:
                for sample in encoded if isinstance(encoded, (list, tuple)) else (encoded,):
                    if isinstance(sample, dict):
                        sample[KEY] = reward
            return encoded

        return encode

    def make_collator(original):
        def data_collator(self, batch, *args, **kwargs):
            rows = batch
            if batch and isinstance(batch[0], list):  # packing: lists of samples
                rows = [sample for pack in batch for sample in pack]
            if not any(isinstance(row, dict) and KEY in row for row in rows):
                return original(self, batch, *args, **kwargs)
            rows = list(rows)
            res = original(self, batch, *args, **kwargs)
            res[KEY] = collate_rewards(self, rows, res)
            return res

        return data_collator

    wrap(Template, "encode", make_encode, host=HOST)
    wrap(Template, "data_collator", make_collator, host=HOST)
