"""`rift-losses normalize`/`convert` and every adapter put the same rows in the same groups.

The same files go through the real `rift-losses` command (a subprocess) and through each
adapter's own grouping: MS-Swift's real dataset loader with a RIFT run active (its rows as
MS-Swift preprocesses them), LLaMA-Factory's ``group_keys`` on what ``convert --to
llamafactory`` wrote (LLaMA-Factory groups by the group column) and, without it, on its aligned
rows (grouped by the prompt, as every host), TRL's ``group_keys`` on the
rows as TRL reads them (chat rows; prompt/completion rows). Chat rows with and without a
system prompt, and prompt/response rows. Rewards are chosen so that any other partition
normalizes to other values.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from swift_helpers import write_jsonl

pytestmark = pytest.mark.slow

SYSTEM = {"role": "system", "content": "You are a careful solver."}


def _chat(user, answer, reward, system=False):
    messages = [SYSTEM] if system else []
    return {
        "messages": [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": answer}],
        "reward": reward,
    }


#: A problem's rows next to each other (normalize's rule). The same user turn with and without a
#: system prompt is two problems; the question of a row without a system prompt is its own problem.
CHAT = [
    _chat("What is 2+3?", "5", 1.0, system=True),
    _chat("What is 2+3?", "6", -0.2, system=True),
    _chat("What is 2+3?", "7", -0.5, system=True),
    _chat("What is 2+3?", "5", 0.3),
    _chat("What is 2+3?", "4", -0.9),
    _chat("Name a prime.", "7", 1.0),
    _chat("Name a prime.", "9", -0.2),
    _chat("Name a prime.", "2", 0.6),
]
PROMPT_RESPONSE = [
    {"prompt": "What is 2+3?", "response": "5", "reward": 1.0},
    {"prompt": "What is 2+3?", "response": "6", "reward": -0.7},
    {"prompt": "Name a prime.", "response": "7", "reward": 0.4},
    {"prompt": "Name a prime.", "response": "8", "reward": -0.2},
    {"prompt": "Name a prime.", "response": "3", "reward": 0.9},
]


def partition(keys) -> set[frozenset[int]]:
    """The rows' groups as sets of row indices (what the keys look like does not matter)."""
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, set()).add(i)
    return {frozenset(g) for g in groups.values()}


def rift_losses_cli(*args):
    done = subprocess.run([sys.executable, "-m", "rift_losses.data", *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


@pytest.fixture
def swift_run(monkeypatch, tmp_path):
    from rift_losses.integrations.swift import _activation, install

    install()
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "cache"))
    for name in ("RIFT_LEVEL", "RIFT_REWARD_COLUMN", "RIFT_GROUP_COLUMN"):
        monkeypatch.delenv(name, raising=False)
    args = {
        "loss_type": "rift_gaussian",
        "task_type": "causal_lm",
        "rlhf_type": None,
        "sequence_parallel_size": 1,
        "enable_dft_loss": False,
        "enable_channel_loss": False,
        "streaming": False,
        "cached_dataset": [],
        "cached_val_dataset": [],
        "padding_free": False,
        "packing": False,
    }
    with _activation.pipeline_datasets(SimpleNamespace(args=SimpleNamespace(**args))):
        yield


def swift_rewards(path, tmp_path):
    from swift.dataset import load_dataset

    train, _ = load_dataset([str(path)], num_proc=1)
    return list(train["_rift_reward"])


@pytest.mark.parametrize("rows", [CHAT, PROMPT_RESPONSE], ids=["chat", "prompt_response"])
def test_the_data_command_and_every_adapter_group_alike(rows, tmp_path, swift_run):
    from datasets import Dataset

    from rift_losses.integrations._common import normalize_dataset_rewards
    from rift_losses.integrations.llamafactory._data import group_keys as llamafactory_group_keys
    from rift_losses.integrations.llamafactory._data import prompt_group_keys as llamafactory_prompt_keys
    from rift_losses.integrations.trl._data import group_keys as trl_group_keys

    raw = write_jsonl(tmp_path / "raw.jsonl", rows)
    # The data command: convert writes each row's group, normalize the rewards normalized within groups.
    rift_losses_cli("convert", raw, "-o", tmp_path / "lf" / "buffer.jsonl", "--to", "llamafactory")
    rift_losses_cli("normalize", raw, "-o", tmp_path / "normalized.jsonl", "--method", "gaussian")
    converted = read_jsonl(tmp_path / "lf" / "buffer.jsonl")
    data_partition = partition(row["group"] for row in converted)
    data_rewards = [row["reward"] for row in read_jsonl(tmp_path / "normalized.jsonl")]
    n_problems = 3 if rows is CHAT else 2
    assert len(data_partition) == n_problems  # a system prompt makes another problem
    rewards = [row["reward"] for row in rows]

    # MS-Swift: its own loader, raw file (grouped by the prompt) and converted file (by the group column).
    assert swift_rewards(raw, tmp_path) == pytest.approx(data_rewards, abs=1e-9)
    assert swift_rewards(tmp_path / "lf" / "buffer.jsonl", tmp_path) == pytest.approx(data_rewards, abs=1e-9)

    # LLaMA-Factory: the group column of what convert wrote for it.
    lf_keys = llamafactory_group_keys([row["group"] for row in converted], column="group", dataset="buffer")
    assert partition(lf_keys) == data_partition
    assert normalize_dataset_rewards(rewards, lf_keys, method="gaussian") == pytest.approx(data_rewards, abs=1e-9)

    # LLaMA-Factory without a group column: the prompt of its aligned rows (system, prompt turns, tools, media).
    aligned = []
    for r in rows:
        messages = r.get("messages") or [{"role": "user", "content": r["prompt"]}]
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        turns = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
        aligned.append({"_system": system, "_prompt": turns[:-1] or turns, "_tools": "", "_images": None})
    lf_prompt_keys = llamafactory_prompt_keys(Dataset.from_list(aligned), dataset="raw")
    assert partition(lf_prompt_keys) == data_partition

    # TRL: the rows as TRL reads them (a prompt/response row is a prompt/completion row there).
    trl_rows = (
        rows
        if rows is CHAT
        else [{"prompt": r["prompt"], "completion": r["response"], "reward": r["reward"]} for r in rows]
    )
    trl_keys = trl_group_keys(
        Dataset.from_list(trl_rows), group_column="group", name="train", loss_type="rift_gaussian"
    )
    assert partition(trl_keys) == data_partition
    assert normalize_dataset_rewards(rewards, trl_keys, method="gaussian") == pytest.approx(data_rewards, abs=1e-9)
    if rows is PROMPT_RESPONSE:  # the conversational form of the same rows groups the same way
        chat_form = [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["response"]}],
                "reward": r["reward"],
            }
            for r in rows
        ]
        keys = trl_group_keys(
            Dataset.from_list(chat_form), group_column="group", name="train", loss_type="rift_gaussian"
        )
        assert partition(keys) == data_partition


def test_a_prompt_response_row_and_a_chat_row_with_the_same_user_turn_are_one_problem(tmp_path):
    """The data command keys a prompt/response row as the user turn it converts to, as the hosts read it."""
    rows = [PROMPT_RESPONSE[0], _chat("What is 2+3?", "6", -0.2), _chat("What is 2+3?", "6", -0.2, system=True)]
    raw = write_jsonl(tmp_path / "mixed.jsonl", rows)
    rift_losses_cli("convert", raw, "-o", tmp_path / "c.jsonl", "--to", "swift")
    groups = [row["group"] for row in read_jsonl(tmp_path / "c.jsonl")]
    assert groups[0] == groups[1] != groups[2]


def test_a_per_message_reward_in_a_parquet_file_is_refused_for_a_normalized_loss(tmp_path, swift_run):
    """Not a JSON file (so not read raw before loading): checked on the rows MS-Swift's loader reads.

    A normalized loss normalizes one reward per row over its group: per-turn rewards are refused.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [dict(r) for r in CHAT[:2]]
    rows[1]["messages"] = [dict(m) for m in rows[1]["messages"]]
    rows[1]["messages"][-1]["reward"] = -0.5
    rows[0]["messages"] = [{**m, "reward": None} for m in rows[0]["messages"]]
    rows[1]["messages"] = [{"reward": None, **m} for m in rows[1]["messages"]]
    path = tmp_path / "turns.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(
        ValueError,
        match=r"--loss_type rift_gaussian must be used with one reward per row, got per-message reward values",
    ):
        swift_rewards(path, tmp_path)


def test_numeric_group_ids_1_and_1_0_are_one_group_in_the_data_command_and_every_host(tmp_path, swift_run):
    """Issue 18, case 4: the hosts' loader reads a column of 1 and 1.0 as floats (one group); so does the command."""
    from datasets import Dataset, load_dataset

    from rift_losses.integrations.llamafactory._data import group_keys as llamafactory_group_keys
    from rift_losses.integrations.trl._data import group_keys as trl_group_keys

    rows = [
        {**_chat("What is 2+3?", "5", 1.0), "group": 1},
        {**_chat("What is 2+3?", "6", -0.2), "group": 1.0},
        {**_chat("Name a prime.", "7", 1.0), "group": 2.0},
        {**_chat("Name a prime.", "9", 0.5), "group": 2.5},
    ]
    raw = write_jsonl(tmp_path / "raw.jsonl", rows)
    rift_losses_cli("convert", raw, "-o", tmp_path / "lf" / "buffer.jsonl", "--to", "llamafactory")
    rift_losses_cli("normalize", raw, "-o", tmp_path / "normalized.jsonl", "--method", "gaussian")
    data_partition = partition(row["group"] for row in read_jsonl(tmp_path / "lf" / "buffer.jsonl"))
    assert data_partition == {frozenset({0, 1}), frozenset({2}), frozenset({3})}
    data_rewards = [row["reward"] for row in read_jsonl(tmp_path / "normalized.jsonl")]
    # MS-Swift: its own loader on the raw file and on the converted one
    assert swift_rewards(raw, tmp_path) == pytest.approx(data_rewards, abs=1e-9)
    assert swift_rewards(tmp_path / "lf" / "buffer.jsonl", tmp_path) == pytest.approx(data_rewards, abs=1e-9)
    # LLaMA-Factory and TRL: the group column as `datasets` loads the raw file
    loaded = load_dataset("json", data_files=str(raw), split="train")
    assert partition(llamafactory_group_keys(loaded["group"], column="group", dataset="raw")) == data_partition
    trl_keys = trl_group_keys(Dataset.from_list(rows), group_column="group", name="train", loss_type="rift_gaussian")
    assert partition(trl_keys) == data_partition
