"""Helpers of the online-RIFT tests: a RiftGRPOTrainer on the tiny local model, reward functions, a float64 reference.

Generation is TRL's own (transformers ``generate`` on the CPU). :class:`SpyTrainer` only records
what TRL hands to ``_compute_loss`` and what it returns; the loss is the real one.
"""

from __future__ import annotations

import math

#: Prompts of equal token length (no left padding: batch 8 and 2 x batch 4 generate alike).
PROMPTS = ["Q0: add 1 and 2.", "Q1: add 3 and 4.", "Q2: add 5 and 6.", "Q3: add 7 and 8."]


def prompt_rows(n_prompts: int = 2) -> list[dict]:
    return [{"prompt": PROMPTS[i % len(PROMPTS)], "pid": i % len(PROMPTS)} for i in range(n_prompts)]


def all_plus_one(completions, **kwargs):
    return [1.0] * len(completions)


def length_parity(completions, **kwargs):
    """+1 for a completion of even length in characters, -0.2 otherwise (mixed within a group)."""
    return [1.0 if len(c) % 2 == 0 else -0.2 for c in completions]


def has_digit(completions, **kwargs):
    """0.5 when the completion has a digit, -1 otherwise; None for an empty completion (unscorable)."""
    return [None if not c else (0.5 if any(ch.isdigit() for ch in c) else -1.0) for c in completions]


def by_prompt(completions, pid, **kwargs):
    """+1 for even prompts, -0.2 for odd ones (the same for every completion of a prompt)."""
    return [1.0 if p % 2 == 0 else -0.2 for p in pid]


def grpo_config(out, **overrides):
    from rift_losses.integrations.trl import RiftGRPOConfig

    kwargs = {
        "output_dir": str(out),
        "loss_type": "rift",
        "bf16": False,
        "fp16": False,
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "num_generations": 4,
        "max_completion_length": 12,
        "max_steps": 1,
        "logging_steps": 1,
        "learning_rate": 0.5,
        "optim": "sgd",
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "seed": 0,
        "data_seed": 0,
        "max_grad_norm": 1e9,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "temperature": 1.0,
    }
    kwargs.update(overrides)
    return RiftGRPOConfig(**kwargs)


#: Greedy decoding for the data-parallel test; the repetition penalty makes the tiny model's prompts differ.
GREEDY = {"do_sample": False, "repetition_penalty": 3.0}


def early_stop_token(model_dir, max_new_tokens: int = 12) -> int:
    """A token that greedy decoding emits early after ``PROMPTS[0]`` and never after ``PROMPTS[1]``.

    Made an end-of-sequence token, it ends prompt 0's greedy completions early and leaves prompt 1's
    at full length: the two prompts' completions then have different token counts.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    completions = []
    with torch.no_grad():
        for prompt in PROMPTS[:2]:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            out = model.generate(ids, max_new_tokens=max_new_tokens, pad_token_id=0, **GREEDY)
            completions.append(out[0, ids.shape[1] :].tolist())
    for token in completions[0][1:8]:
        if token not in completions[1]:
            return token
    raise RuntimeError(f"no token of {completions[0]} is missing from {completions[1]}")


def spy_trainer(model_dir, args, reward_funcs, rows, *, extra_eos=None, **kwargs):
    """A RiftGRPOTrainer that records ``(inputs, loss)`` of every ``_compute_loss`` call in ``.seen``.

    ``extra_eos``: one more end-of-sequence token for generation (see :func:`early_stop_token`).
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rift_losses.integrations.trl import RiftGRPOTrainer

    class SpyTrainer(RiftGRPOTrainer):
        def _compute_loss(self, model, inputs):
            loss = super()._compute_loss(model, inputs)
            self.seen.append((dict(inputs), loss.detach().clone()))
            return loss

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    if extra_eos is not None:
        model.generation_config.eos_token_id = [model.generation_config.eos_token_id, int(extra_eos)]
    tr = SpyTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        **kwargs,
    )
    tr.seen = []
    return tr


def completion_logps64(model, inputs) -> list[list[float]]:
    """Float64 log p of every completion token of a recorded batch, one row at a time, by a plain loop."""
    import torch

    out = []
    with torch.no_grad():
        for b in range(inputs["completion_ids"].shape[0]):
            prompt = inputs["prompt_ids"][b][inputs["prompt_mask"][b].bool()].tolist()
            completion = inputs["completion_ids"][b][inputs["completion_mask"][b].bool()].tolist()
            ids = prompt + completion
            z = model(input_ids=torch.tensor([ids])).logits[0].double()
            row = []
            for k, y in enumerate(completion):
                t = len(prompt) + k - 1  # the position that predicts completion token k
                row.append(float(z[t, y] - torch.logsumexp(z[t], dim=0)))
            out.append(row)
    return out


def term(loss: str, r: float, logp: float) -> float:
    """The paper's term by an ``if`` on the reward's sign (eq. 5; eq. 1 for naive)."""
    if loss == "naive" or r > 0:
        return -r * logp
    if r < 0:
        return -r * math.exp(logp)
    return 0.0


def reference_normalize(rewards: list[float], group: int, method: str | None) -> list[float]:
    """Eq. 6-8 within consecutive groups of ``group`` rewards, with ``statistics`` (float64)."""
    import statistics

    if method is None:
        return list(rewards)
    out = []
    for start in range(0, len(rewards), group):
        g = rewards[start : start + group]
        mu, sd = statistics.fmean(g), statistics.pstdev(g)
        alpha = sum(r > 0 for r in g) / len(g)
        for r in g:
            if method == "gaussian":
                out.append(0.0 if max(g) == min(g) else (r - mu) / sd)
            elif method == "gpg_mean":
                out.append(0.0 if max(g) == min(g) else alpha * (r - mu))
            else:
                out.append(alpha * r)
    return out
