"""Per-turn rewards through the real ``swift sft`` (MS-Swift 4.6), tiny local model, CPU.

An assistant message's own ``reward`` weighs the tokens MS-Swift trains for that message; a
message without one takes the row's; rows with one reward and rows with per-turn rewards mix
in one dataset. Each optimizer step below sees every row (10 rows: a batch of 10, accumulation
2 x 5, two ranks x 5, one padding-free or one packed row), so all of them must log the same curve, and step 1 must equal
an independent float64 reference built from the model's per-token log-probs and each token's turn.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from swift_helpers import TURN_REWARDS, rows, turns_rows, write_jsonl
from swift_reference import expected_token_loss, target_logprobs, turn_targets

pytestmark = pytest.mark.slow

PLUGIN_CPU = str(Path(__file__).with_name("cpu_padding_free_plugin.py"))
LONG = ["--max_length", "512"]
BATCH10 = ["--per_device_train_batch_size", "10", "--gradient_accumulation_steps", "1"]


def turn_dataset() -> list[dict]:
    """Eight agent rows with per-turn rewards, two with one reward per row.

    Row 5's answer has no reward of its own (it takes the row's 0.5); row 7's tool call has
    MS-Swift's ``loss: false`` (untrained, no reward).
    """
    out = turns_rows()
    del out[5]["messages"][3]["reward"]
    out[5]["reward"] = 0.5
    out[7]["messages"][1] = {"role": "assistant", "content": out[7]["messages"][1]["content"], "loss": False}
    return out + rows()[:2]


@pytest.fixture(scope="module")
def turn_dir(data_dir) -> Path:
    write_jsonl(data_dir / "turns.jsonl", turn_dataset())
    write_jsonl(data_dir / "turn_ones.jsonl", turns_rows([(1.0, 1.0)] * 8))
    plain = [{"messages": [{k: v for k, v in m.items() if k != "reward"} for m in r["messages"]]} for r in turns_rows()]
    write_jsonl(data_dir / "turn_plain.jsonl", plain)
    return data_dir


def train(swift_runs, data_dir, name, *args, data="turns.jsonl", steps=2, env=None, nproc=None):
    return swift_runs.sft(
        name,
        ["--dataset", str(data_dir / data), "--tuner_type", "full", "--max_steps", str(steps), *LONG, *args],
        env=env,
        nproc=nproc,
    )


def turns(swift_runs, turn_dir):
    """The reference run: one batch of all ten rows per step; the same rows evaluated after step 2."""
    evaluation = ["--val_dataset", str(turn_dir / "turns.jsonl"), "--per_device_eval_batch_size", "10"]
    evaluation += ["--eval_strategy", "steps", "--eval_steps", "2"]
    return train(swift_runs, turn_dir, "turns", *BATCH10, "--loss_type", "rift", *evaluation).ok()


def close(a, b, rel=1e-5):
    return a == pytest.approx(b, rel=rel, abs=1e-7)


def assert_same_curve(run, base, *, rel=1e-5):
    assert len(run.train) == len(base.train) > 0
    for step, (got, want) in enumerate(zip(run.train, base.train), 1):
        for key in ("loss", "grad_norm", "rift_pos_loss", "rift_neg_loss", "rift_neg_prob"):
            assert close(got[key], want[key], rel=rel), f"step {step} {key}: {got[key]} != {want[key]}"
        for key in ("rift_pos_tokens", "rift_neg_tokens"):
            assert got[key] == want[key], f"step {step} {key}: {got[key]} != {want[key]}"


def test_per_turn_rewards_of_one_equal_swifts_own_loss(swift_runs, turn_dir):
    """All per-turn rewards +1 == MS-Swift's cross-entropy on the same rows, step after step."""
    batch = ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1"]
    ones = train(swift_runs, turn_dir, "turn_ones", *batch, "--loss_type", "rift", data="turn_ones.jsonl", steps=3)
    plain = train(swift_runs, turn_dir, "turn_plain", *batch, data="turn_plain.jsonl", steps=3).ok()
    assert len(ones.ok().train) == len(plain.train) == 3
    for got, want in zip(ones.train, plain.train):
        assert abs(got["loss"] - want["loss"]) < 1e-5 and close(got["loss"], want["loss"])
        assert close(got["grad_norm"], want["grad_norm"])
        assert got["rift_neg_tokens"] == 0 and close(got["rift_pos_loss"], got["loss"])
    assert "8 with per-turn rewards: 16 assistant turns, 16 > 0" in ones.output


def test_mixed_per_turn_rewards_equal_the_float64_reference(swift_runs, turn_dir, tiny_model):
    """Each token weighed by its turn's reward; a 0-reward turn adds nothing, but its tokens are counted."""
    run = turns(swift_runs, turn_dir)
    encoded, token_rewards = turn_targets(tiny_model, turn_dataset())
    want = expected_token_loss(target_logprobs(tiny_model, encoded), token_rewards)
    got = run.train[0]
    assert close(got["loss"], want.loss)
    assert close(got["rift_pos_loss"], want.pos_loss) and close(got["rift_neg_loss"], want.neg_loss, rel=1e-4)
    assert (got["rift_pos_tokens"], got["rift_neg_tokens"]) == (want.pos_tokens, want.neg_tokens)
    assert close(got["rift_neg_prob"], want.neg_prob, rel=1e-4)
    counted = sum(len(r) for r in token_rewards)
    zero = sum(r == 0 for rs in token_rewards for r in rs)  # row 2's call and row 3's answer
    assert zero > 0 and want.pos_tokens + want.neg_tokens == counted - zero
    # not what one reward per row (the first turn's, everywhere) would give
    first = [[rs[0]] * len(rs) for rs in token_rewards]
    assert not close(want.loss, expected_token_loss(target_logprobs(tiny_model, encoded), first).loss, rel=1e-3)
    # row 7's tool call (loss: false) is untrained: its text is in no trained run
    ids, labels = encoded[7]
    assert len([y for y in labels if y != -100]) < len([y for y in encoded[6][1] if y != -100])
    (evaluation,) = run.evals  # evaluation weighs each token by its turn's reward too
    assert (evaluation["eval_rift_pos_tokens"], evaluation["eval_rift_neg_tokens"]) == (
        want.pos_tokens,
        want.neg_tokens,
    )
    assert close(evaluation["eval_rift_pos_loss"] + evaluation["eval_rift_neg_loss"], evaluation["eval_loss"])
    assert "with per-turn rewards: 15 assistant turns" in run.output
    assert "2 with one reward: 1 > 0, 1 < 0, 0 = 0" in run.output


def test_per_turn_gradient_accumulation_and_padding_free_equal_one_batch(swift_runs, turn_dir):
    base = turns(swift_runs, turn_dir)
    accumulated = train(
        swift_runs,
        turn_dir,
        "turns_ga",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "5",
        "--loss_type",
        "rift",
    ).ok()
    free = train(
        swift_runs,
        turn_dir,
        "turns_padding_free",
        *BATCH10,
        "--loss_type",
        "rift",
        "--padding_free",
        "true",
        "--external_plugins",
        PLUGIN_CPU,
    ).ok()
    assert_same_curve(accumulated, base)
    assert_same_curve(free, base)


def test_per_turn_packing_and_two_process_data_parallel_equal_one_batch(swift_runs, turn_dir):
    base = turns(swift_runs, turn_dir)
    packed = train(
        swift_runs,
        turn_dir,
        "turns_packing",
        "--per_device_train_batch_size",
        "1",
        "--gradient_accumulation_steps",
        "1",
        "--loss_type",
        "rift",
        "--packing",
        "true",
        "--packing_length",
        "2048",
        "--external_plugins",
        PLUGIN_CPU,
    ).ok()
    assert "Dataset Token Length: 1070" in packed.output  # all ten rows in one packed row
    ddp = train(
        swift_runs,
        turn_dir,
        "turns_ddp",
        "--per_device_train_batch_size",
        "5",
        "--gradient_accumulation_steps",
        "1",
        "--loss_type",
        "rift",
        "--ddp_backend",
        "gloo",
        "--use_cpu",
        "true",
        nproc=2,
    ).ok()
    assert "world_size: 2" in ddp.output
    assert_same_curve(packed, base)
    assert_same_curve(ddp, base)


# --- bad input: a clear error before the first step ---------------------------------------------


def fails_before_training(run, *messages):
    assert run.returncode != 0
    assert "Train:" not in run.output and "'loss':" not in run.output, "training started"
    for message in messages:
        assert message in run.output, f"{message!r} not in:\n{run.output[-4000:]}"


@pytest.mark.parametrize(
    "case,messages",
    [
        ("string", ["reward must be a finite JSON number on message 1 in row 2 of dataset", "got '1.0'"]),
        ("bool", ["reward must be a finite JSON number on message 3 in row 2 of dataset", "not a bool"]),
        ("nan", ["reward must be a finite JSON number on message 3 in row 2 of dataset", "got nan"]),
        ("user", ["reward must be on assistant messages only, got reward=1.0 on message 0 (role 'user') in row 2"]),
        ("tool", ["reward must be on assistant messages only, got reward=-1.0 on message 2 (role 'tool') in row 2"]),
        ("missing", ["reward must be given for every trained assistant message", "got neither for message 3 in row 2"]),
        ("untrained", ["reward must not be given on an untrained message", "message 1 (loss: false"]),
    ],
)
def test_bad_per_turn_rewards_are_refused_before_the_model_loads(swift_runs, turn_dir, case, messages):
    rows_ = turns_rows()
    turn_messages = rows_[2]["messages"]
    if case == "string":
        turn_messages[1]["reward"] = "1.0"
    elif case == "bool":
        turn_messages[3]["reward"] = True
    elif case == "user":
        turn_messages[0]["reward"] = 1.0
    elif case == "tool":
        turn_messages[2]["reward"] = -1.0
    elif case == "missing":
        del turn_messages[3]["reward"]
    elif case == "untrained":
        turn_messages[1]["loss"] = False
    lines = [json.dumps(r) for r in rows_]
    if case == "nan":
        lines[2] = lines[2].replace('"reward": 1.0}', '"reward": NaN}')
        assert "NaN" in lines[2]
    path = turn_dir / f"bad_turn_{case}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    run = train(swift_runs, turn_dir, f"bad_turn_{case}", *BATCH10, "--loss_type", "rift", data=path.name)
    fails_before_training(run, *messages, str(path))


@pytest.mark.parametrize(
    "args,env,option",
    [
        (["--loss_type", "rift_gaussian"], None, "--loss_type rift_gaussian"),
        (["--loss_type", "rift_naive"], {"RIFT_LEVEL": "sequence"}, "RIFT_LEVEL=sequence"),
    ],
    ids=["normalized", "sequence"],
)
def test_normalized_losses_and_the_sequence_level_refuse_per_turn_rows(swift_runs, turn_dir, args, env, option):
    run = train(swift_runs, turn_dir, f"turns_refused_{option[:12]}", *BATCH10, *args, env=env)
    fails_before_training(
        run,
        f"{option} must be used with one reward per row, got per-message reward values in dataset",
        "per-turn rewards would be averaged away",
    )


def test_reference_finds_each_turn_by_its_text(tiny_model):
    """The reference's turn finding is independent of the adapter: it matches decoded text to messages."""
    _, token_rewards = turn_targets(tiny_model, turns_rows())
    for rs, (first, second) in zip(token_rewards, TURN_REWARDS):
        assert set(rs) == {first, second} and not math.isnan(sum(rs))


def test_the_data_commands_per_turn_output_trains_as_the_original_rows(swift_runs, turn_dir):
    """``rift-losses convert --to swift`` keeps each message's reward where ``swift sft`` reads it: same curve."""
    import subprocess
    import sys

    write_jsonl(turn_dir / "turns_src.jsonl", turns_rows())
    cli = Path(sys.executable).parent / "rift-losses"
    done = subprocess.run(
        [
            str(cli),
            "convert",
            str(turn_dir / "turns_src.jsonl"),
            "-o",
            str(turn_dir / "turns_conv.jsonl"),
            "--to",
            "swift",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    batch = ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--loss_type", "rift"]
    original = train(swift_runs, turn_dir, "turns_src", *batch, data="turns_src.jsonl").ok()
    converted = train(swift_runs, turn_dir, "turns_conv", *batch, data="turns_conv.jsonl").ok()
    assert_same_curve(converted, original)
    assert converted.train[0]["rift_neg_tokens"] > 0 and converted.train[0]["rift_pos_tokens"] > 0
    assert "8 with per-turn rewards" in converted.output
