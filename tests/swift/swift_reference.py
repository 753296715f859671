"""An independent float64 reference for what `swift sft --loss_type rift*` must log at step 1.

Written differently from the package: MS-Swift's own template encodes each row (the same
tokens the run trains on), a float64 copy of the initial model scores each sample on its own
(no padding, no packing), and the RIFT terms are written out per token with plain Python
branches and ``statistics`` for the group normalizations.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def encode_rows(model_dir, rows, *, max_length: int = 128) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` of each row, encoded by MS-Swift's ``qwen`` template in training mode."""
    from swift import get_processor, get_template

    processor = get_processor(str(model_dir), model_type="qwen2")
    template = get_template(processor, template_type="qwen", max_length=max_length)
    template.set_mode("train")
    out = []
    for row in rows:
        encoded = template.encode({"messages": row["messages"]})
        out.append((list(encoded["input_ids"]), list(encoded["labels"])))
    return out


def turn_targets(model_dir, rows, *, column: str = "reward", max_length: int = 512):
    """``(encoded, rewards)``: each row encoded by MS-Swift's ``qwen`` template, and the reward of each target token.

    Found without the adapter's run-to-turn rule: each run of target labels is decoded and
    matched to the first unused trained assistant message whose text it starts with; its reward
    is the message's own, else the row's. Raises ``AssertionError`` when a run matches no message.
    """
    from swift import get_processor, get_template

    processor = get_processor(str(model_dir), model_type="qwen2")
    template = get_template(processor, template_type="qwen", max_length=max_length)
    template.set_mode("train")
    encoded, rewards = [], []
    for row in rows:
        messages = [{k: v for k, v in m.items() if k != column} for m in row["messages"]]
        out = template.encode({"messages": messages})
        ids, labels = list(out["input_ids"]), list(out["labels"])
        trained = [m for m in row["messages"] if m["role"] == "assistant" and m.get("loss", True)]
        token_reward = [None] * len(labels)
        t = 0
        while t < len(labels):
            if labels[t] == -100:
                t += 1
                continue
            end = t
            while end < len(labels) and labels[end] != -100:
                end += 1
            text = processor.decode(ids[t:end])
            match = next(m for m in trained if text.startswith(m["content"]))  # StopIteration: no message
            trained.remove(match)
            for k in range(t, end):
                token_reward[k] = match.get(column, row.get(column))
            t = end
        encoded.append((ids, labels))
        rewards.append([token_reward[t + 1] for t in range(len(labels) - 1) if labels[t + 1] != -100])
    return encoded, rewards


def expected_token_loss(logprobs, token_rewards, *, loss: str = "rift") -> Expected:
    """The token-level loss over one batch holding every sample, each target token with its own reward."""
    pos = neg = neg_prob_sum = 0.0
    pos_tokens = neg_tokens = 0
    for lps, rs in zip(logprobs, token_rewards):
        assert len(lps) == len(rs)
        for logp, r in zip(lps, rs):
            if r > 0:
                pos += -r * logp
                pos_tokens += 1
            elif r < 0:
                neg += -r * logp if loss == "naive" else -r * math.exp(logp)
                neg_tokens += 1
                neg_prob_sum += math.exp(logp)
    denominator = sum(len(lp) for lp in logprobs)
    return Expected(
        loss=(pos + neg) / denominator,
        pos_loss=pos / denominator,
        neg_loss=neg / denominator,
        pos_tokens=pos_tokens,
        neg_tokens=neg_tokens,
        neg_prob=neg_prob_sum / neg_tokens if neg_tokens else None,
    )


def target_logprobs(model_dir, encoded) -> list[list[float]]:
    """Float64 log p of every target token (labels[t + 1] predicted at t) of each sample."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float64).eval()
    out = []
    with torch.no_grad():
        for input_ids, labels in encoded:
            logits = model(torch.tensor([input_ids]), use_cache=False).logits[0]
            logp = torch.log_softmax(logits, dim=-1)
            out.append([float(logp[t, labels[t + 1]]) for t in range(len(labels) - 1) if labels[t + 1] != -100])
    return out


def core_loss(model_dir, encoded, rewards) -> float:
    """The package's own ``rift_losses.rift_loss`` on the same samples (float64 logits, one call).

    The samples are right-padded into one ``(B, T, V)`` batch with -100 labels on the padding.
    """
    import torch
    from transformers import AutoModelForCausalLM

    import rift_losses

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float64).eval()
    width = max(len(ids) for ids, _ in encoded)
    logits, labels = [], []
    with torch.no_grad():
        for input_ids, sample_labels in encoded:
            out = model(torch.tensor([input_ids]), use_cache=False).logits[0]
            logits.append(torch.cat([out, out.new_zeros(width - len(input_ids), out.shape[-1])]))
            labels.append(sample_labels + [-100] * (width - len(sample_labels)))
        loss = rift_losses.rift_loss(
            torch.stack(logits),
            rift_losses.shift_labels(torch.tensor(labels)),
            torch.tensor(rewards, dtype=torch.float64),
        )
    return float(loss)


@dataclass
class Expected:
    loss: float
    pos_loss: float
    neg_loss: float
    pos_tokens: int
    neg_tokens: int
    neg_prob: float | None


def expected_loss(logprobs, rewards, *, loss: str = "rift", level: str = "token") -> Expected:
    """The loss over one batch holding every sample (mean over target tokens, or samples)."""
    pos = neg = 0.0
    pos_tokens = sum(len(lp) for lp, r in zip(logprobs, rewards) if r > 0)
    neg_tokens = sum(len(lp) for lp, r in zip(logprobs, rewards) if r < 0)
    neg_prob_sum = sum(math.exp(x) for lp, r in zip(logprobs, rewards) if r < 0 for x in lp)

    def term(logp: float, r: float) -> float:
        if loss == "naive" or r > 0:
            return -r * logp
        return -r * math.exp(logp) if r < 0 else 0.0

    if level == "token":
        denominator = sum(len(lp) for lp in logprobs)
        for lp, r in zip(logprobs, rewards):
            part = sum(term(x, r) for x in lp)
            if r > 0:
                pos += part
            elif r < 0:
                neg += part
    else:
        denominator = len(logprobs)
        for lp, r in zip(logprobs, rewards):
            part = term(sum(lp), r)
            if r > 0:
                pos += part
            elif r < 0:
                neg += part
    return Expected(
        loss=(pos + neg) / denominator,
        pos_loss=pos / denominator,
        neg_loss=neg / denominator,
        pos_tokens=pos_tokens,
        neg_tokens=neg_tokens,
        neg_prob=neg_prob_sum / neg_tokens if neg_tokens else None,
    )


def normalized(rewards, groups, method: str) -> list[float]:
    """Paper eq. 6-8 per group with ``statistics`` (population std); equal rewards -> 0 (or r*N+/N)."""
    out = []
    for r, g in zip(rewards, groups):
        members = [x for x, h in zip(rewards, groups) if h == g]
        mu, sigma = statistics.fmean(members), statistics.pstdev(members)
        alpha = sum(x > 0 for x in members) / len(members)
        equal = max(members) == min(members)
        if method == "gaussian":
            out.append(0.0 if equal else (r - mu) / sigma)
        elif method == "gpg_mean":
            out.append(0.0 if equal else alpha * (r - mu))
        elif method == "gpg_scaled":
            out.append(alpha * r)
        else:
            raise ValueError(method)
    return out
