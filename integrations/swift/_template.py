"""Template: copy each row's reward to its encoded sample, and collate the batch's rewards.

``Template.encode`` copies ``_rift_reward`` from the row to the encoded sample; for a row with
per-turn rewards (``_rift_turns``) it puts one reward per token on the sample instead
(``_rift_token_rewards``, :func:`._turns.encoded_token_rewards`), or the reason it cannot
(``_rift_turn_error``: MS-Swift drops a row whose encoding raises, so the collator and the
pre-flight check raise it). ``Template.data_collator`` adds ``(B,)`` rewards for padded batches
of row-level samples, ``(B, T)`` per-token rewards aligned with the padded labels when a sample
has per-turn rewards (a row-level sample's reward on each of its tokens), and ``(1, T)``
per-token rewards for ``padding_free``/``packing`` (which rebuild the batch from a fixed set of
keys). Also installed in dataloader workers, which import the template but not the pipeline.
"""

from __future__ import annotations

from typing import Any

from .._core.patching import wrap
from ._state import HOST, KEY
from ._turns import ERROR_KEY, TOKENS_KEY, TURNS_KEY, encoded_token_rewards


def _row_value(inputs, key: str) -> Any:
    if isinstance(inputs, dict):
        return inputs.get(key)
    chosen = getattr(inputs, "chosen", None)
    extra = getattr(chosen, "extra_kwargs", None)
    return extra.get(key) if isinstance(extra, dict) else None


def _row_messages(inputs) -> list:
    if isinstance(inputs, dict):
        return list(inputs.get("messages") or ())
    return list(getattr(getattr(inputs, "chosen", None), "messages", None) or ())


def _sample_rewards(row: dict, i: int, n: int) -> tuple[float | None, list[float] | None]:
    """``(row reward, per-token rewards)`` of encoded sample ``i`` of ``n``; raises the sample's per-turn error."""
    error = row.get(ERROR_KEY) if isinstance(row, dict) else None
    if error:
        raise ValueError(error)
    tokens = row.get(TOKENS_KEY) if isinstance(row, dict) else None
    value = row.get(KEY) if isinstance(row, dict) else None
    if tokens is None and value is None:
        raise ValueError(
            f"every sample of a RIFT batch must carry a reward, got none in sample {i} of {n}: "
            "a dataset without rewards is mixed into a RIFT run"
        )
    if tokens is not None and len(tokens) != len(row["input_ids"]):
        raise ValueError(
            f"per-token rewards must have one value per token, got {len(tokens)} for {len(row['input_ids'])} tokens "
            f"in sample {i} of {n}"
        )
    return (None if value is None else float(value)), tokens


def collate_rewards(template, rows: list, res: dict):
    """The batch's reward tensor for the collated ``res`` of encoded ``rows`` (see module doc)."""
    import torch

    samples = [_sample_rewards(row, i, len(rows)) for i, row in enumerate(rows)]
    lengths = [len(row["input_ids"]) for row in rows]
    labels = res.get("labels")
    per_token = any(tokens is not None for _, tokens in samples)
    if getattr(template, "padding_free", False):
        tokens = []
        for (value, own), n in zip(samples, lengths):
            tokens.extend(own if own is not None else [value] * n)
        width = labels.shape[-1] if labels is not None else len(tokens)
        if width < len(tokens):
            raise ValueError(
                f"packed labels must cover every token of the packed samples, got {width} labels for {len(tokens)} "
                "tokens"
            )
        padding = [0.0] * (width - len(tokens))  # padding_to (MS-Swift pads packed rows on the padding side)
        tokens = tokens + padding if _pads_right(template) else padding + tokens
        return torch.tensor(tokens, dtype=torch.float32)[None]
    if labels is not None and labels.shape[0] != len(samples):
        raise ValueError(
            f"the collated batch must have one row per sample, got {labels.shape[0]} rows for {len(samples)} samples"
        )
    if not per_token:
        return torch.tensor([value for value, _ in samples], dtype=torch.float32)
    width = labels.shape[-1]
    out = torch.zeros(len(samples), width, dtype=torch.float32)
    for i, ((value, own), n) in enumerate(zip(samples, lengths)):
        if n > width:
            raise ValueError(f"the collated labels must cover every token of sample {i}, got {width} for {n} tokens")
        row = torch.tensor(own if own is not None else [value] * n, dtype=torch.float32)
        if _pads_right(template):
            out[i, :n] = row
        else:
            out[i, width - n :] = row
    return out


def _pads_right(template) -> bool:
    """MS-Swift's ``Template._data_collator`` rule: ``padding_side`` in training, else left."""
    side = getattr(template, "padding_side", "right") if getattr(template, "is_training", True) else "left"
    return side == "right"


def install_template_patches() -> None:
    from swift.template.base import Template

    def make_encode(original):
        def encode(self, inputs, *args, **kwargs):
            encoded = original(self, inputs, *args, **kwargs)
            reward, turns = _row_value(inputs, KEY), _row_value(inputs, TURNS_KEY)
            if reward is None and turns is None:
                return encoded
            for sample in encoded if isinstance(encoded, (list, tuple)) else (encoded,):
                if not isinstance(sample, dict):
                    continue
                if reward is not None:
                    sample[KEY] = reward
                if turns is not None:
                    labels = sample.get("labels")
                    if labels is None:  # not training (inference, evaluation without labels): no rewards to place
                        continue
                    tokens, error = encoded_token_rewards(list(labels), _row_messages(inputs), turns, reward)
                    if error is not None:
                        sample[ERROR_KEY] = error
                    else:
                        sample[TOKENS_KEY] = tokens
            return encoded

        return encode

    def make_collator(original):
        def data_collator(self, batch, *args, **kwargs):
            rows = batch
            if batch and isinstance(batch[0], list):  # packing: lists of samples
                rows = [sample for pack in batch for sample in pack]
            if not any(isinstance(row, dict) and (KEY in row or TOKENS_KEY in row or ERROR_KEY in row) for row in rows):
                return original(self, batch, *args, **kwargs)
            rows = list(rows)
            res = original(self, batch, *args, **kwargs)
            res[KEY] = collate_rewards(self, rows, res)
            return res

        return data_collator

    wrap(Template, "encode", make_encode, host=HOST)
    wrap(Template, "data_collator", make_collator, host=HOST)
