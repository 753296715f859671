"""Shared helpers of the MS-Swift adapter tests: the dataset rows and the `swift` CLI runner.

Every run is the real ``swift`` CLI of this virtual environment as a subprocess, on CPU,
offline (``HF_HUB_OFFLINE=1``, ``--check_model false``, a private ModelScope cache). Runs are
cached per session, so several tests can assert on one run. (A uniquely named module, not
``conftest``: several test directories have a conftest.py and run in one pytest session.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import free_port, run_command

SWIFT = str(Path(sys.executable).with_name("swift"))

#: Six sampled responses to two problems, graded +1.0 / -0.2 (the paper's scheme):
#: (prompt index, response, reward, group). The ``group`` column deliberately differs from the
#: prompts ({0, 1, 3} and {2, 4, 5} against {0, 1, 2} and {3, 4, 5}), so the two groupings
#: normalize to different rewards, and neither to the +-1 a pair of rows would give.
PROMPTS = ("What is 2 + 3?", "Natalia sold 48 clips in April and half as many in May. How many in all?")
RESPONSES = (
    (0, "The answer is 5.", 1.0, "g1"),
    (0, "The answer is 6, I think.", -0.2, "g1"),
    (0, "2 + 3 = 7. The answer is 7.", -0.2, "g2"),
    (1, "Half of 48 is 24, so 72.", 1.0, "g1"),
    (1, "The answer is 72.", 1.0, "g2"),
    (1, "She sold 96 clips.", -0.2, "g2"),
)


def rows(*, rewards=None, group: bool = True, reward_column: str = "reward") -> list[dict]:
    out = []
    for i, (p, response, reward, g) in enumerate(RESPONSES):
        row = {"messages": [{"role": "user", "content": PROMPTS[p]}, {"role": "assistant", "content": response}]}
        row[reward_column] = reward if rewards is None else rewards[i]
        if group:
            row["group"] = g
        out.append(row)
    return out


#: Per-turn rewards of eight agent-like rows: (the tool call's, the answer's). Row 2's call and row 3's
#: answer have reward 0 (their tokens count, they add nothing); row 4 is all negative.
TURN_REWARDS = [(1.0, -0.2), (-1.0, 0.5), (0.0, 1.0), (0.7, 0.0), (-0.4, -1.0), (1.0, 0.3), (0.2, -0.6), (0.9, 0.4)]


def turns_rows(turn_rewards=TURN_REWARDS, *, row_reward=None) -> list[dict]:
    """Agent-like rows: user, assistant (a tool call, its own reward), tool, assistant (an answer, its own reward).

    A turn reward of None leaves the message without one (it then takes ``row_reward``).
    """
    out = []
    for i, (first, second) in enumerate(turn_rewards):
        call = {"role": "assistant", "content": f"<tool_call>ls {i}</tool_call>"}
        answer = {"role": "assistant", "content": "It is " + " ".join(str(i + k) for k in range(1 + i % 3)) + "."}
        for message, r in ((call, first), (answer, second)):
            if r is not None:
                message["reward"] = r
        row = {
            "messages": [
                {"role": "user", "content": f"T{i}: find it"},
                call,
                {"role": "tool", "content": "a b"},
                answer,
            ]
        }
        if row_reward is not None:
            row["reward"] = row_reward
        out.append(row)
    return out


def write_jsonl(path: Path, items) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in items))
    return path


def offline_env(cache: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIFT_") and k not in ("NPROC_PER_NODE", "NNODES")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        MODELSCOPE_CACHE=str(cache),
        HF_HOME=str(cache / "hf"),
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        MASTER_PORT=str(free_port()),
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class SftRun:
    returncode: int
    output: str
    output_dir: Path

    @property
    def history(self) -> list[dict]:
        """``log_history`` at full precision (the last line of logging.jsonl)."""
        lines = (self.output_dir / "logging.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["log_history"]

    @property
    def train(self) -> list[dict]:
        return [h for h in self.history if "loss" in h]

    @property
    def evals(self) -> list[dict]:
        return [h for h in self.history if "eval_loss" in h]

    def ok(self) -> SftRun:
        assert self.returncode == 0, self.output[-6000:]
        return self


class Swift:
    """Runs ``swift sft`` (and ``swift infer``) on the tiny model; caches runs by name."""

    BASE = [
        "--model_type",
        "qwen2",
        "--template",
        "qwen",
        "--check_model",
        "false",
        "--torch_dtype",
        "float32",
        "--seed",
        "42",
        "--max_length",
        "128",
        "--dataloader_num_workers",
        "0",
        "--report_to",
        "none",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--add_version",
        "false",
        "--learning_rate",
        "1e-3",
        "--lr_scheduler_type",
        "constant",
        "--warmup_ratio",
        "0",
        "--dataset_num_proc",
        "1",
    ]

    def __init__(self, root: Path, model: Path):
        self.root, self.model = root, model
        self.cache = root / "cache"
        self.runs: dict[str, SftRun] = {}

    def sft(
        self, name: str, args: list[str], *, env: dict | None = None, nproc: int | None = None, timeout: int = 600
    ) -> SftRun:
        if name in self.runs:
            return self.runs[name]
        output_dir = self.root / name
        extra = dict(env or {})
        if nproc:
            extra["NPROC_PER_NODE"] = nproc
        cmd = [SWIFT, "sft", "--model", str(self.model), *self.BASE, "--output_dir", str(output_dir), *args]
        proc = run_command(
            cmd, env=offline_env(self.cache, **extra), cwd=self.root, capture_output=True, text=True, timeout=timeout
        )
        run = SftRun(proc.returncode, proc.stdout + proc.stderr, output_dir)
        self.runs[name] = run
        return run

    def command(self, args: list[str], *, env: dict | None = None, timeout: int = 600):
        return subprocess.run(
            [SWIFT, *args],
            env=offline_env(self.cache, **(env or {})),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
