"""Helpers of the LLaMA-Factory tests: a tiny model, datasets, and a runner for the real CLI.

Everything is built offline in one session directory: the tiny Qwen2-shaped model and
tokenizer (``rift_dev.tiny_model``), alpaca and sharegpt datasets whose prompts carry a
marker (``Q3``, ``E1``) so a processed row can be traced back to its source row, and a
``dataset_info.json`` that maps the same files under several names (reward column "score",
"one" or "two"; broken mappings for the error tests).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from harness import run_command

BIN = Path(sys.executable).parent

#: alpaca rows: marker Q{i}; groups of 3 rows ("a0", "a1")
ALPACA_SCORES = [1.0, -0.2, 0.5, -1.0, 1.0, 0.0]
#: sharegpt rows: marker Q{10 + i}; row 2 is malformed (no assistant turn): LLaMA-Factory drops it
SHAREGPT_SCORES = [2.0, -0.5, 7.0, 0.3, -1.0, 1.0]
SHAREGPT_GROUPS = [0, 0, 1, 1, 1, 2]
MALFORMED = "Q12"
#: eval rows (alpaca): marker E{i}
EVAL_SCORES = [1.0, -0.5, 0.8, -0.2]
EVAL_GROUPS = ["e0", "e0", "e1", "e1"]


def _alpaca_row(marker, i, score, group):
    return {
        "instruction": f"{marker}: What is {i} + {i}?",
        "output": f"The answer is {2 * i}.",
        "score": score,
        "one": 1.0,
        "two": 2.0,
        "pid": group,
    }


def source_rows() -> dict:
    """marker -> (raw reward, group key as the adapter stores it: JSON text) of every well-formed source row."""
    rows = {f"Q{i}": (s, json.dumps(f"a{i // 3}")) for i, s in enumerate(ALPACA_SCORES)}
    rows.update({f"Q{10 + i}": (s, json.dumps(g)) for i, (s, g) in enumerate(zip(SHAREGPT_SCORES, SHAREGPT_GROUPS))})
    rows.update({f"E{i}": (s, json.dumps(g)) for i, (s, g) in enumerate(zip(EVAL_SCORES, EVAL_GROUPS))})
    del rows[MALFORMED]
    return rows


def _write_data(data: Path) -> None:
    data.mkdir()
    alpaca = [_alpaca_row(f"Q{i}", i, s, f"a{i // 3}") for i, s in enumerate(ALPACA_SCORES)]
    sharegpt = []
    for i, (score, group) in enumerate(zip(SHAREGPT_SCORES, SHAREGPT_GROUPS)):
        turns = [
            {"from": "human", "value": f"Q{10 + i}: Add {i} and 3."},
            {"from": "gpt", "value": f"So the result is {i + 3}."},
        ]
        if f"Q{10 + i}" == MALFORMED:
            turns = turns[:1]
        sharegpt.append({"conversations": turns, "score": score, "one": 1.0, "two": 2.0, "pid": group})
    turns = turn_rows()
    # two prompts with two responses each and no group column: grouped by the prompt
    same_prompt = [_alpaca_row("P", i // 2, s, None) for i, s in enumerate([1.0, -0.2, 0.5, 0.5])]
    for row in same_prompt:
        del row["pid"]
    evals = [_alpaca_row(f"E{i}", i + 20, s, g) for i, (s, g) in enumerate(zip(EVAL_SCORES, EVAL_GROUPS))]
    nulls = [_alpaca_row(f"N{i}", i, s, "n") for i, s in enumerate([1.0, 0.5, None, -0.2])]
    strings = [_alpaca_row(f"S{i}", i, s, "s") for i, s in enumerate(["1.0", "high"])]
    # one string / one bool among numbers (datasets' JSON loader fails on them naming nothing), a group
    # column mixing numbers and strings, groups of one row (gaussian normalizes them all to 0), all-zero rewards
    one_string = [_alpaca_row(f"T{i}", i, s, "t") for i, s in enumerate([1.0, -0.2, "1.0", 0.5])]
    one_bool = [_alpaca_row(f"B{i}", i, s, "b") for i, s in enumerate([1.0, True, -0.2])]
    mixed_group = [_alpaca_row(f"M{i}", i, 1.0, g) for i, g in enumerate([0, 0, "1", 1])]
    single = [_alpaca_row(f"G{i}", i, s, f"g{i}") for i, s in enumerate([1.0, -0.2, 1.0, -0.2])]
    zeros = [_alpaca_row(f"Z{i}", i + 30, 0.0, "z") for i in range(4)]
    for name, rows in (
        ("alp.json", alpaca),
        ("sg.json", sharegpt),
        ("eval.json", evals),
        ("nulls.json", nulls),
        ("strings.json", strings),
        ("one_string.json", one_string),
        ("mixed_group.json", mixed_group),
        ("single.json", single),
        ("zeros.json", zeros),
        ("turns.json", turns),
        ("turn_ones.json", turn_rows(ones=True)),
        ("same_prompt.json", same_prompt),
    ):
        (data / name).write_text(json.dumps(rows))
    (data / "one_bool.jsonl").write_text("".join(json.dumps(row) + "\n" for row in one_bool))
    import pyarrow as pa
    import pyarrow.parquet as pq

    nonfinite = [_alpaca_row(f"F{i}", i, s, "f") for i, s in enumerate([1.0, float("nan"), -0.2])]
    pq.write_table(pa.Table.from_pylist(nonfinite), data / "nonfinite.parquet")

    alpaca_columns = {"prompt": "instruction", "response": "output"}
    sharegpt = {"file_name": "sg.json", "formatting": "sharegpt"}
    info = {
        "alp": {"file_name": "alp.json", "columns": {**alpaca_columns, "reward": "score", "group": "pid"}},
        "sg": {**sharegpt, "columns": {"messages": "conversations", "reward": "score", "group": "pid"}},
        "eval": {"file_name": "eval.json", "columns": {**alpaca_columns, "reward": "score", "group": "pid"}},
        "unmapped": {"file_name": "alp.json", "columns": alpaca_columns},
        "missing_col": {"file_name": "alp.json", "columns": {**alpaca_columns, "reward": "reward"}},
        "no_group_col": {"file_name": "alp.json", "columns": {**alpaca_columns, "reward": "score", "group": "problem"}},
        "nulls": {"file_name": "nulls.json", "columns": {**alpaca_columns, "reward": "score"}},
        "strings": {"file_name": "strings.json", "columns": {**alpaca_columns, "reward": "score"}},
        "nonfinite": {"file_name": "nonfinite.parquet", "columns": {**alpaca_columns, "reward": "score"}},
        "one_string": {"file_name": "one_string.json", "columns": {**alpaca_columns, "reward": "score"}},
        "one_bool": {"file_name": "one_bool.jsonl", "columns": {**alpaca_columns, "reward": "score"}},
        "mixed_group": {
            "file_name": "mixed_group.json",
            "columns": {**alpaca_columns, "reward": "score", "group": "pid"},
        },
        "single": {"file_name": "single.json", "columns": {**alpaca_columns, "reward": "score", "group": "pid"}},
        "zeros": {"file_name": "zeros.json", "columns": {**alpaca_columns, "reward": "score", "group": "pid"}},
        "same_prompt": {"file_name": "same_prompt.json", "columns": {**alpaca_columns, "reward": "score"}},
    }
    info.update(_turn_data(data))
    for column in ("one", "two"):
        info[f"alp_{column}"] = {"file_name": "alp.json", "columns": {**alpaca_columns, "reward": column}}
        info[f"sg_{column}"] = {**sharegpt, "columns": {"messages": "conversations", "reward": column}}
        info[f"eval_{column}"] = {"file_name": "eval.json", "columns": {**alpaca_columns, "reward": column}}
    (data / "dataset_info.json").write_text(json.dumps(info, indent=1))


#: Per-turn rows (markers K{i}): (the row's "score" or None, the turns as (role, reward or None));
#: each turn a human (or observation) message and a gpt (or function_call) one. K2 is an agent
#: trajectory with no row reward (each trained message has its own), K3 has none on its messages.
TURN_ROWS = [
    (0.5, [("gpt", 1.0), ("gpt", -0.5)]),
    (-1.0, [("gpt", None), ("gpt", 0.0)]),
    (None, [("function_call", 1.0), ("gpt", -0.2)]),
    (2.0, [("gpt", None), ("gpt", None)]),
    (0.3, [("gpt", -0.8), ("gpt", 0.6)]),
    (-0.4, [("gpt", 0.7), ("gpt", None)]),
]


def turn_rows(*, ones: bool = False) -> list[dict]:
    """The sharegpt rows of :data:`TURN_ROWS` (``ones``: every trained message with reward 1.0, no row reward)."""
    rows = []
    for i, (score, turns) in enumerate(TURN_ROWS):
        messages = []
        for k, (role, reward) in enumerate(turns):
            asker = "observation" if role == "gpt" and k and turns[k - 1][0] == "function_call" else "human"
            answer = f'{{"name": "ls", "arguments": {{"dir": "{i}"}}}}' if role == "function_call" else None
            messages.append({"from": asker, "value": f"K{i}: step {k}, add {i} and {k}." if k == 0 else f"Then {k}?"})
            message = {"from": role, "value": answer or f"The sum is {i + k}{'.' * (k + 1)}"}
            if ones or reward is not None:
                message["score"] = 1.0 if ones else reward
            messages.append(message)
        row = {"conversations": messages}
        if score is not None and not ones:
            row["score"] = score
        rows.append(row)
    return rows


def turn_token_rewards() -> list[list[float]]:
    """The reward of each trained message of each row of :data:`TURN_ROWS`: its own, else the row's."""
    return [[score if r is None else r for _, r in turns] for score, turns in TURN_ROWS]


def _turn_data(data: Path) -> dict:
    """The per-turn datasets (and broken copies, each naming its broken row 1 / message index)."""
    sharegpt = {"formatting": "sharegpt", "columns": {"messages": "conversations", "reward": "score"}}
    tags = {  # LLaMA-Factory sets every tag a "tags" object leaves out to null: all of them
        "role_tag": "from",
        "content_tag": "value",
        "user_tag": "human",
        "assistant_tag": "gpt",
        "observation_tag": "observation",
        "function_tag": "function_call",
        "system_tag": "system",
    }
    tagged = {**sharegpt, "tags": {**tags, "reward_tag": "score"}}
    info = {
        "sg_turns": {"file_name": "turns.json", **tagged},
        "sg_turn_ones": {**tagged, "file_name": "turn_ones.json", "columns": {"messages": "conversations"}},
        "sg_turn_plain": {
            "file_name": "turn_ones.json",
            "formatting": "sharegpt",
            "columns": {"messages": "conversations"},
        },
        "sg_turns_untagged": {"file_name": "turns.json", **sharegpt},
        "sg_tag_misspelt": {"file_name": "turns.json", **sharegpt, "tags": {**tags, "rewrd_tag": "score"}},
        "sg_tag_alone": {"file_name": "turns.json", **sharegpt, "tags": {"reward_tag": "score"}},
        "alp_reward_tag": {
            "file_name": "alp.json",
            "columns": {"prompt": "instruction", "response": "output", "reward": "score"},
            "tags": {"reward_tag": "score"},
        },
    }
    broken = {  # name: (message index of row 1, fields)
        "string": (1, {"score": "1.0"}),
        "bool": (3, {"score": True}),
        "nonfinite": (3, {"score": float("inf")}),
        "user": (2, {"score": 0.5}),
    }
    for name, (index, fields) in broken.items():
        rows = turn_rows()
        rows[1]["conversations"][index].update(fields)
        (data / f"turns_{name}.json").write_text(json.dumps(rows))
        info[f"sg_turns_{name}"] = {"file_name": f"turns_{name}.json", **tagged}
    rows = turn_rows()
    del rows[1]["score"]  # its message 1 has no reward of its own
    (data / "turns_missing.json").write_text(json.dumps(rows))
    info["sg_turns_missing"] = {"file_name": "turns_missing.json", **tagged}
    return info


class Run:
    """One finished ``llamafactory-cli`` (or launcher) subprocess."""

    def __init__(self, proc: subprocess.CompletedProcess, output_dir: Path, config: dict):
        self.rc = proc.returncode
        self.output = proc.stdout
        self.output_dir = output_dir
        self.config = config
        log = output_dir / "trainer_log.jsonl"
        self.log = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    @property
    def train_logs(self) -> list:
        return [e for e in self.log if "loss" in e]

    def eval_loss(self, step: int) -> float:
        return next(e["eval_loss"] for e in self.log if "eval_loss" in e and e["current_steps"] == step)

    def tail(self, n: int = 3000) -> str:
        return self.output[-n:]


class Workspace:
    def __init__(self, root: Path):
        from rift_dev.tiny_model import build_tiny_qwen2

        self.root = root
        self.model = build_tiny_qwen2(root / "model")
        self.data = root / "data"
        _write_data(self.data)
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # torchrun of this venv
            "HF_HOME": str(root / "hf"),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "CUDA_VISIBLE_DEVICES": "",  # CPU: no automatic torchrun, deterministic
            "TOKENIZERS_PARALLELISM": "false",
            "WANDB_DISABLED": "true",
        }
        for name in ("FORCE_TORCHRUN", "NPROC_PER_NODE", "ALLOW_EXTRA_ARGS", "RIFT_LOSSES_AUTOLOAD", "USE_MCA"):
            self.env.pop(name, None)

    def config(self, name: str, **overrides) -> dict:
        """A small full-SFT config on CPU (3 steps, batch 2, fixed order), with ``overrides``."""
        config = {
            "model_name_or_path": str(self.model),
            "stage": "sft",
            "do_train": True,
            "finetuning_type": "full",
            "template": "qwen",
            "dataset": "alp,sg",
            "dataset_dir": str(self.data),
            "cutoff_len": 128,
            "preprocessing_num_workers": 1,
            "output_dir": str(self.root / "runs" / name),
            "overwrite_output_dir": True,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1.0e-2,
            "max_steps": 3,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "disable_shuffling": True,
            "seed": 0,
        }
        config.update(overrides)
        return {k: v for k, v in config.items() if v is not None}

    def train(self, config: dict, *, command=("llamafactory-cli", "train"), env=None, timeout=600) -> Run:
        output_dir = Path(config["output_dir"])
        output_dir.mkdir(parents=True, exist_ok=True)
        cfg = output_dir.parent / f"{output_dir.name}.yaml"
        cfg.write_text(yaml.safe_dump(config))
        proc = run_command(
            [str(BIN / command[0]), *command[1:], str(cfg)],
            cwd=self.root,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        return Run(proc, output_dir, config)

    def python(self, code: str, *args: str, env=None, timeout=600) -> subprocess.CompletedProcess:
        """``python -c code *args`` in this venv, with the workspace's offline environment."""
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )


def ok(run: Run) -> Run:
    """``run``, asserting it exited 0 (its output's tail is the failure message otherwise)."""
    assert run.rc == 0, run.tail()
    return run
