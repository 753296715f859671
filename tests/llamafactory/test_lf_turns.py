"""Per-turn rewards through the real ``llamafactory-cli train`` (sharegpt, ``"reward_tag"`` in the tags).

Each gpt / function_call message of :data:`lf_helpers.TURN_ROWS` may carry its own reward; one
without gets the row's. The references find each turn's tokens independently of the adapter: the
k-th contiguous run of target tokens of a processed row (``labels != -100``) is the row's k-th
trained message (LLaMA-Factory trains content + end of turn of each assistant message, and the
next turn's prompt separates two runs); they recompute the loss from the untouched initial model
in float64. Bad inputs are in ``test_lf_errors.py``.
"""

import math

import pytest
import torch

from lf_helpers import TURN_ROWS, ok, turn_token_rewards

pytestmark = pytest.mark.slow

TOL = 1e-5
TURNS = {"use_rift_loss": True, "dataset": "sg_turns", "cutoff_len": 256}  # every turn fits
STATS = ("loss", "rift/pos_loss", "rift/neg_loss", "rift/pos_tokens", "rift/neg_tokens")


def _close(a, b, tol=TOL):
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def _runs(labels) -> list[list[int]]:
    """The positions of each contiguous run of target tokens (unshifted labels)."""
    runs, previous = [], False
    for t, label in enumerate(labels):
        if label != -100:
            if not previous:
                runs.append([])
            runs[-1].append(t)
        previous = label != -100
    return runs


def _expected_rewards(row, turns: list[float], *, last: bool = False) -> list[float]:
    """Each token's reward from its run (turn), 0 off the targets: runs are the first turns (cutoff_len cuts the
    last ones), or with ``last`` the last ones (mask_history trains the last turn only)."""
    runs = _runs(row["labels"])
    out = [0.0] * len(row["input_ids"])
    for run, reward in zip(runs, turns[len(turns) - len(runs) :] if last else turns):
        for t in run:
            out[t] = reward
    return out


@pytest.fixture(scope="session")
def turns_run(lf):
    return ok(lf.train(lf.config("turns", **TURNS, tokenized_path=str(lf.root / "tok_turns"))))


@pytest.fixture(scope="session")
def model(lf):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(lf.model), dtype=torch.float32).eval()


def _train_rows(path):
    from datasets import load_from_disk

    return load_from_disk(path)["train"]


def _reference(model, rows) -> dict:
    """float64 loss and its parts over a batch of processed rows, each token weighed by its turn's reward."""
    pos = neg = 0.0
    pos_n = neg_n = tokens = 0
    for row in rows:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0].double()
        logp = logits[:-1].log_softmax(-1)
        for t in range(1, len(row["input_ids"])):
            label, r = row["labels"][t], row["expected"][t]
            if label == -100:
                continue
            tokens += 1
            lp = float(logp[t - 1, label])
            if r > 0:
                pos, pos_n = pos - r * lp, pos_n + 1
            elif r < 0:
                neg, neg_n = neg - r * math.exp(lp), neg_n + 1
    return {
        "loss": (pos + neg) / tokens,
        "rift/pos_loss": pos / tokens,
        "rift/neg_loss": neg / tokens,
        "rift/pos_tokens": pos_n,
        "rift/neg_tokens": neg_n,
        "tokens": tokens,
    }


def _with_expected(rows, turns, *, last: bool = False):
    return [{**row, "expected": _expected_rewards(row, t, last=last)} for row, t in zip(rows, turns)]


def test_per_turn_rewards_of_one_equal_plain_sft(lf):
    """Every trained message with reward 1.0 (no row reward): each logged loss equals LLaMA-Factory's own SFT loss."""
    plain = ok(lf.train(lf.config("turn_plain", dataset="sg_turn_plain")))
    ones = ok(lf.train(lf.config("turn_ones", use_rift_loss=True, dataset="sg_turn_ones")))
    base, got = [e["loss"] for e in plain.train_logs], [e["loss"] for e in ones.train_logs]
    assert len(base) == len(got) == 3 and all(_close(a, b) for a, b in zip(got, base)), (got, base)
    for entry in ones.train_logs:
        assert entry["rift/neg_tokens"] == 0 and _close(entry["rift/pos_loss"], entry["loss"])


def test_each_token_gets_its_turns_reward(turns_run):
    """The saved per-token rewards: each target token its message's reward (the row's when it has none)."""
    rows = _train_rows(turns_run.config["tokenized_path"])
    assert len(rows) == len(TURN_ROWS)
    for row, turns in zip(rows, turn_token_rewards()):
        assert len(_runs(row["labels"])) == len(turns)  # every turn trained, none cut
        expected = _expected_rewards(row, turns)
        got = row["rift_token_rewards"]
        assert len(got) == len(expected)
        for t, label in enumerate(row["labels"]):
            if label != -100:
                assert got[t] == pytest.approx(expected[t], rel=1e-15), (t, got, expected)
    assert "RIFT train_dataset: 11 rewards (5 > 0, 5 < 0, 1 = 0) of 6 rows and their assistant turns" in (
        turns_run.output
    ), turns_run.tail()


def test_mixed_per_turn_rewards_equal_the_float64_reference(turns_run, model):
    """Mixed signs, a 0-reward turn (its tokens counted, adding nothing), a row reward: first step and its parts."""
    rows = _with_expected(_train_rows(turns_run.config["tokenized_path"]), turn_token_rewards())
    ref = _reference(model, rows[:2])  # row 0: +1.0 and -0.5; row 1: the row's -1.0, then 0.0
    first = turns_run.train_logs[0]
    for key in STATS:
        assert _close(first[key], ref[key]), (key, first, ref)
    zero = sum(1 for t, y in enumerate(rows[1]["labels"]) if y != -100 and rows[1]["expected"][t] == 0)
    assert zero > 0 and ref["rift/pos_tokens"] + ref["rift/neg_tokens"] + zero == ref["tokens"]
    for entry in turns_run.train_logs:
        assert _close(entry["rift/pos_loss"] + entry["rift/neg_loss"], entry["loss"]), entry


def test_mask_history_trains_the_last_turn_with_its_reward(lf, model):
    """mask_history masks the earlier turns (their rewards then weigh nothing); the last turn keeps its own."""
    run = ok(
        lf.train(lf.config("turns_mask", **TURNS, mask_history=True, max_steps=1, tokenized_path=str(lf.root / "tm")))
    )
    rows = _train_rows(run.config["tokenized_path"])
    turns = turn_token_rewards()
    for row, t in zip(rows, turns):
        assert len(_runs(row["labels"])) == 1
        assert row["rift_token_rewards"][_runs(row["labels"])[0][0]] == pytest.approx(t[-1], rel=1e-15)
    ref = _reference(model, _with_expected(rows, turns, last=True)[:2])
    for key in STATS:
        assert _close(run.train_logs[0][key], ref[key]), (key, run.train_logs[0], ref)


def test_cutoff_len_keeps_each_kept_tokens_turn_reward(lf):
    """cutoff_len 40 cuts the later turns of every row (drops some whole): each kept token keeps its turn's reward."""
    run = ok(
        lf.train(lf.config("turns_cut", **{**TURNS, "cutoff_len": 40}, max_steps=1, tokenized_path=str(lf.root / "tc")))
    )
    rows = _train_rows(run.config["tokenized_path"])
    cut = 0
    for row, turns in zip(rows, turn_token_rewards()):
        assert len(row["input_ids"]) <= 40
        runs = _runs(row["labels"])
        cut += len(runs) < len(turns)
        expected = _expected_rewards(row, turns)
        for t, label in enumerate(row["labels"]):
            if label != -100:
                assert row["rift_token_rewards"][t] == pytest.approx(expected[t], rel=1e-15), (t, row)
    assert cut > 0


def _same_run(a, b):
    assert len(a.train_logs) == len(b.train_logs) == 3
    for x, y in zip(a.train_logs, b.train_logs):
        for key in STATS:
            assert _close(x[key], y[key]), (key, x, y)


def test_gradient_accumulation_equals_one_batch(lf, turns_run):
    """Batch 1 x 2 accumulation steps (each micro-batch its own padding): the same 3 steps as batch 2."""
    tokenized = turns_run.config["tokenized_path"]
    config = lf.config(
        "turns_ga", **TURNS, per_device_train_batch_size=1, gradient_accumulation_steps=2, tokenized_path=tokenized
    )
    _same_run(ok(lf.train(config)), turns_run)


def test_torchrun_two_processes_equal_one(lf, turns_run):
    """2 CPU processes x batch 1 under torchrun: the same 3 steps as batch 2 in one process."""
    tokenized = turns_run.config["tokenized_path"]
    config = lf.config("turns_ddp", **TURNS, per_device_train_batch_size=1, tokenized_path=tokenized)
    run = ok(lf.train(config, env={"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"}))
    assert "world size: 2" in run.output
    _same_run(run, turns_run)


def test_the_data_commands_per_turn_output_trains_each_turn_with_its_reward(lf, tmp_path):
    """``rift-losses convert --to llamafactory`` on per-turn rows: its dataset_info entry is what the adapter reads."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    def talk(i, first, second):
        row = {
            "messages": [
                {"role": "user", "content": f"K{i}: add {i} and 1."},
                {"role": "assistant", "content": f"The sum is {i + 1}.", "reward": first},
                {"role": "user", "content": "Then 2?"},
                {"role": "assistant", "content": f"The sum is {i + 2}..", "reward": second},
            ]
        }
        if i == 2:  # a row-level reward beside per-turn rows: both its turns get it
            row["reward"] = first
            for message in row["messages"]:
                message.pop("reward", None)
        return row

    turns = [(1.0, -0.5), (-0.2, 1.0), (0.5, 0.5), (1.0, 0.0)]
    src = tmp_path / "turns.jsonl"
    src.write_text("".join(json.dumps(talk(i, *t)) + "\n" for i, t in enumerate(turns)))
    data = tmp_path / "lf_data"
    cli = Path(sys.executable).parent / "rift-losses"
    done = subprocess.run(
        [str(cli), "convert", str(src), "-o", str(data / "turns.jsonl"), "--to", "llamafactory"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    config = lf.config(
        "convert_turns",
        use_rift_loss=True,
        dataset="turns",
        dataset_dir=str(data),
        cutoff_len=256,
        max_steps=1,
        per_device_train_batch_size=4,
        tokenized_path=str(tmp_path / "tok"),
    )
    run = ok(lf.train(config))
    rows = _train_rows(config["tokenized_path"])
    for row, t in zip(rows, turns):
        runs = _runs(row["labels"])
        assert len(runs) == 2
        assert [row["rift_token_rewards"][r[0]] for r in runs] == pytest.approx(list(t), rel=1e-7)
    log = run.train_logs[0]
    assert log["rift/neg_tokens"] > 0 and log["rift/pos_tokens"] > 0
