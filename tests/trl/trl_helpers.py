"""Helpers of the TRL tests: the tiny local model, datasets with rewards, configs, a float64 reference.

Nothing is downloaded: the tiny Qwen2-shaped model and tokenizer come from
``rift_dev.tiny_model``. Rows carry a marker (``Q3``) in the prompt so they can be told apart.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

# The harness (tests/harness.py) for the scripts torchrun and accelerate start, which import this
# module without pytest's conftest.py (the one that puts tests/ on sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import run_command  # noqa: E402

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]

#: 12 training rows: mixed rewards, groups of 3 (group "g0".."g3").
REWARDS = [1.0, -0.2, 0.5, -1.0, 1.0, 0.0, 2.0, -0.5, 0.3, 0.7, -0.4, 1.5]
EVAL_REWARDS = [1.0, -0.5, 0.8, -0.2]


def messages_rows(rewards=REWARDS, *, marker="Q", groups=True) -> list[dict]:
    """Conversational rows: a user question and an assistant answer whose length varies by row."""
    rows = []
    for i, r in enumerate(rewards):
        answer = "The answer is " + " ".join(str(i + k) for k in range(1 + i % 4)) + "."
        row = {
            "messages": [
                {"role": "user", "content": f"{marker}{i}: What is {i} + {i}?"},
                {"role": "assistant", "content": answer},
            ],
            "reward": r,
        }
        if groups:
            row["group"] = f"g{i // 3}"
        rows.append(row)
    return rows


#: Per-turn rewards of the multi-turn rows: (first assistant turn, second assistant turn) per row.
TURN_REWARDS = [(1.0, -0.2), (-1.0, 0.5), (0.0, 1.0), (0.7, 0.0), (-0.4, -1.0), (1.0, 0.3), (0.2, -0.6), (0.9, 0.4)]


def turns_rows(turn_rewards=TURN_REWARDS, *, marker="T", row_reward=None) -> list[dict]:
    """Agent-like rows: user, assistant (a tool call, its own reward), tool, assistant (an answer, its own reward).

    A turn reward of None leaves the message without one (it then takes ``row_reward``).
    """
    rows = []
    for i, (first, second) in enumerate(turn_rewards):
        call = {"role": "assistant", "content": f"<tool_call>ls {i}</tool_call>"}
        answer = {"role": "assistant", "content": "It is " + " ".join(str(i + k) for k in range(1 + i % 3)) + "."}
        for message, r in ((call, first), (answer, second)):
            if r is not None:
                message["reward"] = r
        row = {
            "messages": [
                {"role": "user", "content": f"{marker}{i}: Find the file."},
                call,
                {"role": "tool", "content": "a.txt b.txt"},
                answer,
            ]
        }
        if row_reward is not None:
            row["reward"] = row_reward
        rows.append(row)
    return rows


def turn_token_rewards(tokenizer, input_ids, messages) -> list[float | None]:
    """Each token's reward, found independently of the adapter: None off the assistant turns.

    An assistant message's trained tokens are ``tokenize(content) + [<|im_end|>]``, searched
    for in ``input_ids`` after the previous turn (the tiny ChatML template renders them so).
    """
    out: list[float | None] = [None] * len(input_ids)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pos = 0
    for message in messages:
        if message["role"] != "assistant":
            continue
        piece = tokenizer(message["content"], add_special_tokens=False)["input_ids"] + [end_id]
        start = next(s for s in range(pos, len(input_ids)) if input_ids[s : s + len(piece)] == piece)
        for t in range(start, start + len(piece)):
            out[t] = float(message["reward"])
        pos = start + len(piece)
    return out


def prompt_completion_rows(rewards=REWARDS, *, conversational=False) -> list[dict]:
    rows = []
    for i, r in enumerate(rewards):
        prompt, completion = f"Q{i}: Add {i} and 3.", f" So the result is {i + 3}" + "." * (1 + i % 3)
        if conversational:
            row = {
                "prompt": [{"role": "user", "content": prompt}],
                "completion": [{"role": "assistant", "content": completion.strip()}],
            }
        else:
            row = {"prompt": prompt, "completion": completion}
        rows.append({**row, "reward": r})
    return rows


def dataset(rows):
    from datasets import Dataset

    return Dataset.from_list(rows)


def config(out, *, config_class=None, **overrides):
    """A RiftSFTConfig (or ``config_class``) for CPU tests: float32, sequential sampling, a log every step."""
    from rift_losses.integrations.trl import RiftSFTConfig

    kwargs = {
        "output_dir": str(out),
        "bf16": False,
        "fp16": False,
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_steps": 2,
        "logging_steps": 1,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "seed": 0,
        "data_seed": 0,
        "train_sampling_strategy": "sequential",
        "max_grad_norm": 1e9,
        "dataloader_num_workers": 0,
        "dataset_num_proc": None,
        "max_length": None,
        "gradient_checkpointing": False,
        "disable_tqdm": True,
    }
    kwargs.update(overrides)
    return (config_class or RiftSFTConfig)(**kwargs)


#: The tiny tokenizer's ChatML template with ``{% generation %}`` markers (for ``assistant_only_loss``).
TRAINING_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def trainer(model_dir, args, train_rows, eval_rows=None, *, chat_template=None, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rift_losses.integrations.trl import RiftSFTTrainer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return RiftSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset(train_rows) if isinstance(train_rows, list) else train_rows,
        eval_dataset=dataset(eval_rows) if isinstance(eval_rows, list) else eval_rows,
        processing_class=tokenizer,
        **kwargs,
    )


def train_logs(tr) -> list[dict]:
    """The per-step training logs (loss, grad_norm, rift/*) of a finished run."""
    tr.train()
    return [h for h in tr.state.log_history if "loss" in h and "train_runtime" not in h]


def reference_turn_loss(model, rows_tokens, *, loss="rift"):
    """Float64 reference with one reward per token: ``[(input_ids, token_rewards), ...]`` (None: not a target).

    The token at position t + 1 is predicted from position t; tokens with reward None are not
    targets; a target with reward 0 adds 0 but is counted. Returns ``(loss, pos, neg, pos_n, neg_n)``.
    """
    import torch

    pos = neg = 0.0
    pos_n = neg_n = count = 0
    with torch.no_grad():
        for input_ids, rewards in rows_tokens:
            z = model(input_ids=torch.tensor([input_ids])).logits[0].double()
            for t in range(len(input_ids) - 1):
                r = rewards[t + 1]
                if r is None:
                    continue
                logp = float(z[t, input_ids[t + 1]] - torch.logsumexp(z[t], dim=0))
                term = _term(loss, r, logp)
                count += 1
                if r > 0:
                    pos, pos_n = pos + term, pos_n + 1
                elif r < 0:
                    neg, neg_n = neg + term, neg_n + 1
    return (pos + neg) / count, pos / count, neg / count, pos_n, neg_n


def reference_step_loss(model, batch_rows_tokens, *, loss="rift", level="token", world=1):
    """Float64 reference of one step's RIFT loss on ``[(input_ids, labels, reward), ...]``.

    Written as a plain loop, independently of the package: a float64 copy of the model's
    logits for one row at a time; log p = z[y] - logsumexp(z) per next-token label; the
    paper's term by an ``if`` on the reward's sign; summed, divided by the target count.
    """
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for input_ids, labels, r in batch_rows_tokens:
            z = model(input_ids=torch.tensor([input_ids])).logits[0].double()
            seq_logp, has = 0.0, False
            for t in range(len(input_ids) - 1):
                y = labels[t + 1]
                if y == -100:
                    continue
                logp = float(z[t, y] - torch.logsumexp(z[t], dim=0))
                if level == "token":
                    total += _term(loss, r, logp)
                    count += 1
                else:
                    seq_logp, has = seq_logp + logp, True
            if level == "sequence" and has:
                total += _term(loss, r, seq_logp)
                count += 1
    return total / max(count, 1)


def _term(loss, r, logp):
    if loss == "naive" or r > 0:
        return -r * logp
    if r < 0:
        return -r * math.exp(logp)
    return 0.0


def run_cli(args, *, cwd, env_extra=None, timeout=600):
    """Run a console script of this venv (``trl``, ``rift-trl``); returns the CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return run_command(
        [str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
