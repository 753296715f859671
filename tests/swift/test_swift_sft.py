"""`swift sft --loss_type rift*` end to end: real MS-Swift subprocesses on CPU, offline.

Each optimizer step sees all six rows (global batch 6), so every batching below -- one batch
of 6, gradient accumulation 3 x 2, two data-parallel ranks x 3, one padding-free row, one
packed row -- must log the same loss, positive/negative parts, token counts and gradient
norm as the others, step after step; and step 1 must equal an independent float64 reference.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swift_helpers import RESPONSES, rows, write_jsonl
from swift_reference import core_loss, encode_rows, expected_loss, normalized

pytestmark = pytest.mark.slow

PLUGIN_CPU = str(Path(__file__).with_name("cpu_padding_free_plugin.py"))
BATCH6 = ["--per_device_train_batch_size", "6", "--gradient_accumulation_steps", "1"]
GA3 = ["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "3"]
REWARDS = [r for _, _, r, _ in RESPONSES]
GROUPS = [g for _, _, _, g in RESPONSES]
PROMPT_OF = [p for p, _, _, _ in RESPONSES]


def train(swift_runs, data_dir, name, *args, data="mixed.jsonl", steps=3, tuner="full", env=None, nproc=None):
    return swift_runs.sft(
        name,
        ["--dataset", str(data_dir / data), "--tuner_type", tuner, "--max_steps", str(steps), *args],
        env=env,
        nproc=nproc,
    )


def mixed(swift_runs, data_dir):
    """The reference run: --loss_type rift, one batch of all six rows per step."""
    return train(swift_runs, data_dir, "mixed", *BATCH6, "--loss_type", "rift").ok()


def close(a, b, rel=1e-5):
    return a == pytest.approx(b, rel=rel, abs=1e-7)


def assert_same_curve(run, base, *, rel=1e-5):
    assert len(run.train) == len(base.train) > 0
    for step, (got, want) in enumerate(zip(run.train, base.train), 1):
        for key in ("loss", "grad_norm", "rift_pos_loss", "rift_neg_loss", "rift_neg_prob"):
            assert close(got[key], want[key], rel=rel), f"step {step} {key}: {got[key]} != {want[key]}"
        for key in ("rift_pos_tokens", "rift_neg_tokens"):
            assert got[key] == want[key], f"step {step} {key}: {got[key]} != {want[key]}"


# --- rewards all 1.0 / 2.0 against plain cross-entropy -------------------------------------------


def plain(swift_runs, data_dir):
    """No --loss_type (MS-Swift's cross-entropy) on the dataset with negative rewards."""
    return train(swift_runs, data_dir, "plain", *BATCH6).ok()


def test_plain_run_warns_loudly_about_negative_rewards(swift_runs, data_dir):
    run = plain(swift_runs, data_dir)
    assert "has 3 of 6 rows with reward < 0" in run.output
    assert "WRONG responses" in run.output and "the default cross-entropy" in run.output
    assert "rift_pos_loss" not in run.train[0]


def test_rewards_one_equal_plain_cross_entropy(swift_runs, data_dir):
    base = plain(swift_runs, data_dir)
    ones = train(swift_runs, data_dir, "ones", *BATCH6, "--loss_type", "rift", data="ones.jsonl").ok()
    assert len(ones.train) == len(base.train) == 3
    for got, want in zip(ones.train, base.train):  # the whole trajectory, not just step 1
        assert abs(got["loss"] - want["loss"]) < 1e-5 and close(got["loss"], want["loss"])
        assert close(got["grad_norm"], want["grad_norm"])
        assert got["rift_neg_tokens"] == 0 and got["rift_neg_loss"] == 0
    assert abs(base.train[0]["loss"] - base.train[2]["loss"]) > 1e-3  # the weights did move
    assert "WRONG responses" not in ones.output


def test_rewards_two_double_the_first_loss(swift_runs, data_dir):
    base = plain(swift_runs, data_dir)
    twos = train(swift_runs, data_dir, "twos", *BATCH6, "--loss_type", "rift", data="twos.jsonl", steps=1).ok()
    assert close(twos.train[0]["loss"], 2 * base.train[0]["loss"])
    assert close(twos.train[0]["grad_norm"], 2 * base.train[0]["grad_norm"])


# --- mixed signed rewards: the reference, and every batching equal to one big batch ------------


def test_mixed_rewards_first_step_equals_reference(swift_runs, data_dir, reference_logprobs):
    run = mixed(swift_runs, data_dir)
    want = expected_loss(reference_logprobs, REWARDS)
    got = run.train[0]
    assert close(got["loss"], want.loss)
    assert close(got["rift_pos_loss"], want.pos_loss)
    assert close(got["rift_neg_loss"], want.neg_loss, rel=1e-4)
    assert (got["rift_pos_tokens"], got["rift_neg_tokens"]) == (want.pos_tokens, want.neg_tokens)
    assert close(got["rift_neg_prob"], want.neg_prob, rel=1e-4)
    # the core function on the same batch agrees (float64 logits)
    assert close(got["loss"], core_loss(swift_runs.model, encode_rows(swift_runs.model, rows()), REWARDS))
    # not what a mix-up of rows and rewards would give
    assert not close(want.loss, expected_loss(reference_logprobs, REWARDS[::-1]).loss, rel=1e-3)
    for h in run.train:  # the logged parts add up to the logged loss
        assert close(h["rift_pos_loss"] + h["rift_neg_loss"], h["loss"])
    assert "rows with rewards (3 > 0, 3 < 0, 0 = 0)" in run.output
    assert "WRONG responses" not in run.output and "trains NOTHING" not in run.output


def test_gradient_accumulation_equals_one_batch(swift_runs, data_dir):
    # collated in a spawned dataloader worker: the rewards' path is installed there by the hook too
    accumulated = train(
        swift_runs,
        data_dir,
        "mixed_ga",
        *GA3,
        "--loss_type",
        "rift",
        "--dataloader_num_workers",
        "1",
        "--dataloader_multiprocessing_context",
        "spawn",
    ).ok()
    assert_same_curve(accumulated, mixed(swift_runs, data_dir))


def test_logits_gradient_in_place_trains_the_same(swift_runs, data_dir):
    """The default writes the logits gradient over the logits; RIFT_INPLACE_GRAD=0 does not: same curve."""
    separate = train(
        swift_runs, data_dir, "mixed_not_inplace", *BATCH6, "--loss_type", "rift", env={"RIFT_INPLACE_GRAD": "0"}
    ).ok()
    base = mixed(swift_runs, data_dir)
    assert_same_curve(separate, base, rel=1e-6)
    assert abs(base.train[0]["loss"] - base.train[2]["loss"]) > 1e-3  # the weights moved: gradients compared


def test_fused_head_off_trains_the_same(swift_runs, data_dir):
    """The default trains through the fused LM head (no logits: MS-Swift logs no token_acc in training);
    RIFT_FUSED_HEAD=0 materializes the logits: the same curve, gradient norms included."""
    unfused = train(
        swift_runs, data_dir, "mixed_not_fused", *BATCH6, "--loss_type", "rift", env={"RIFT_FUSED_HEAD": "0"}
    ).ok()
    base = mixed(swift_runs, data_dir)
    assert all("token_acc" in h for h in unfused.train) and not any("token_acc" in h for h in base.train)
    assert_same_curve(unfused, base)
    assert abs(base.train[0]["loss"] - base.train[2]["loss"]) > 1e-3  # the weights moved: gradients compared


def test_two_process_data_parallel_equals_one_process(swift_runs, data_dir):
    ddp = train(
        swift_runs,
        data_dir,
        "mixed_ddp",
        "--per_device_train_batch_size",
        "3",
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
    assert_same_curve(ddp, mixed(swift_runs, data_dir))
    assert_parts_add_up(ddp)


def assert_parts_add_up(run):
    """The logged RIFT parts add up to the logged loss (the statistics are scaled as the trainer scales the loss)."""
    assert run.train
    for h in run.train:
        assert close(h["rift_pos_loss"] + h["rift_neg_loss"], h["loss"]), h


def test_statistics_add_up_without_averaging_tokens_across_devices(swift_runs, data_dir):
    """average_tokens_across_devices false: each rank divides by its own tokens and the Trainer does not scale."""
    ddp = train(
        swift_runs,
        data_dir,
        "mixed_ddp_local_tokens",
        "--per_device_train_batch_size",
        "3",
        "--gradient_accumulation_steps",
        "1",
        "--loss_type",
        "rift",
        "--ddp_backend",
        "gloo",
        "--use_cpu",
        "true",
        "--average_tokens_across_devices",
        "false",
        nproc=2,
    ).ok()
    assert "world_size: 2" in ddp.output
    assert_parts_add_up(ddp)


def test_padding_free_carries_per_token_rewards(swift_runs, data_dir):
    free = train(
        swift_runs,
        data_dir,
        "mixed_padding_free",
        *BATCH6,
        "--loss_type",
        "rift",
        "--padding_free",
        "true",
        "--external_plugins",
        PLUGIN_CPU,
    ).ok()
    assert_same_curve(free, mixed(swift_runs, data_dir))


def test_packing_carries_per_token_rewards(swift_runs, data_dir):
    packed = train(
        swift_runs,
        data_dir,
        "mixed_packing",
        "--per_device_train_batch_size",
        "1",
        "--gradient_accumulation_steps",
        "1",
        "--loss_type",
        "rift",
        "--packing",
        "true",
        "--packing_length",
        "512",
        "--external_plugins",
        PLUGIN_CPU,
    ).ok()
    assert "Dataset Token Length: 384" in packed.output  # all six rows in one packed row
    assert_same_curve(packed, mixed(swift_runs, data_dir))


# --- normalized rewards over whole groups; naive loss at sequence level; knobs -----------------


def test_gaussian_normalizes_over_whole_groups_of_the_dataset(swift_runs, data_dir, reference_logprobs):
    run = train(swift_runs, data_dir, "gaussian", *GA3, "--loss_type", "rift_gaussian", steps=1).ok()
    want = expected_loss(reference_logprobs, normalized(REWARDS, GROUPS, "gaussian"))
    assert close(run.train[0]["loss"], want.loss)
    assert "normalized by gaussian within 2 groups (by column 'group')" in run.output
    # not the prompt grouping; and whole groups of three give +-0.707 / +-1.414, which no
    # normalization within a micro-batch of two rows (always +-1 or 0) can give
    by_prompt = expected_loss(reference_logprobs, normalized(REWARDS, PROMPT_OF, "gaussian"))
    assert not close(want.loss, by_prompt.loss, rel=1e-3)
    assert all(abs(abs(x) - 1) > 0.2 for x in normalized(REWARDS, GROUPS, "gaussian"))


def test_naive_loss_at_sequence_level_with_accumulation(swift_runs, data_dir, reference_logprobs):
    run = train(
        swift_runs,
        data_dir,
        "naive_sequence",
        *GA3,
        "--loss_type",
        "rift_naive",
        steps=1,
        env={"RIFT_LEVEL": "sequence"},
    ).ok()
    want = expected_loss(reference_logprobs, REWARDS, loss="naive", level="sequence")
    assert close(run.train[0]["loss"], want.loss)
    assert "rift-losses: --loss_type rift_naive (naive loss, level sequence)" in run.output


def test_reward_column_named_by_environment(swift_runs, data_dir, reference_logprobs):
    write_jsonl(data_dir / "score.jsonl", rows(reward_column="score", group=False))
    run = train(
        swift_runs,
        data_dir,
        "score_column",
        *BATCH6,
        "--loss_type",
        "rift",
        data="score.jsonl",
        steps=1,
        env={"RIFT_REWARD_COLUMN": "score"},
    ).ok()
    assert close(run.train[0]["loss"], expected_loss(reference_logprobs, REWARDS).loss)


# --- LoRA, evaluation, checkpoints, resume, the --external_plugins route, swift infer --------


@pytest.fixture(scope="module")
def plugin_copy(tmp_path_factory) -> Path:
    """A copy of the --external_plugins file, at the path `python -m ...swift` prints."""
    printed = subprocess.run(
        [sys.executable, "-m", "rift_losses.integrations.swift"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert Path(printed).is_file() and printed.endswith("plugin.py")
    copy = tmp_path_factory.mktemp("elsewhere") / "rift_plugin.py"
    shutil.copy(printed, copy)
    return copy


@pytest.fixture(scope="module")
def lora(swift_runs, data_dir, plugin_copy):
    """LoRA, validation set, checkpoints at steps 2 and 4; RIFT registered only by the plugin copy."""
    return train(
        swift_runs,
        data_dir,
        "lora",
        *GA3,
        "--loss_type",
        "rift",
        "--val_dataset",
        str(data_dir / "mixed.jsonl"),
        "--eval_steps",
        "2",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--external_plugins",
        str(plugin_copy),
        steps=4,
        tuner="lora",
        env={"RIFT_LOSSES_AUTOLOAD": "0"},
    ).ok()


def test_lora_external_plugin_route_and_evaluation(lora, swift_runs, data_dir):
    base = mixed(swift_runs, data_dir)
    assert close(lora.train[0]["loss"], base.train[0]["loss"])  # LoRA starts at the base weights
    assert lora.train[1]["loss"] < lora.train[0]["loss"]
    assert len(lora.evals) == 2
    for e in lora.evals:  # evaluation runs the RIFT loss on the validation rewards
        assert close(e["eval_rift_pos_loss"] + e["eval_rift_neg_loss"], e["eval_loss"])
        assert e["eval_rift_neg_tokens"] > 0
    state = json.loads((lora.output_dir / "checkpoint-4" / "trainer_state.json").read_text())
    assert [h["rift_neg_tokens"] for h in state["log_history"] if "loss" in h] == [
        h["rift_neg_tokens"] for h in lora.train
    ]
    args = json.loads((lora.output_dir / "args.json").read_text())
    assert args["external_plugins"] == [] and args["loss_type"] == "rift"
    assert "args.json leaves out external_plugins" in lora.output


def test_resume_from_checkpoint_continues_the_same_run(lora, swift_runs, data_dir):
    resumed = train(
        swift_runs,
        data_dir,
        "lora_resumed",
        *GA3,
        "--loss_type",
        "rift",
        "--val_dataset",
        str(data_dir / "mixed.jsonl"),
        "--eval_steps",
        "2",
        "--resume_from_checkpoint",
        str(lora.output_dir / "checkpoint-2"),
        steps=4,
        tuner="lora",
    ).ok()
    # trainer_state.json brings steps 1-2 from the checkpoint; steps 3-4 are trained again
    assert [h["step"] for h in resumed.train] == [1, 2, 3, 4]
    assert resumed.output.count("{'loss':") == 2 and lora.output.count("{'loss':") == 4  # it trained 2 steps
    for got, want in zip(resumed.train[2:], lora.train[2:]):
        assert close(got["loss"], want["loss"]) and close(got["grad_norm"], want["grad_norm"])
        assert got["rift_neg_tokens"] == want["rift_neg_tokens"]


def test_swift_infer_starts_on_the_checkpoint_after_the_plugin_is_gone(lora, swift_runs, data_dir, plugin_copy):
    plugin_copy.unlink()  # as on another machine
    result = swift_runs.command(
        [
            "infer",
            "--adapters",
            str(lora.output_dir / "checkpoint-4"),
            "--val_dataset",
            str(data_dir / "mixed.jsonl") + "#2",
            "--max_new_tokens",
            "4",
            "--infer_backend",
            "transformers",
            "--result_path",
            str(lora.output_dir / "infer.jsonl"),
        ],
        env={"RIFT_LOSSES_AUTOLOAD": "0"},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert len((lora.output_dir / "infer.jsonl").read_text().splitlines()) == 2
    assert "WRONG responses" not in result.stdout + result.stderr  # inference trains nothing


# --- bad input: a clear error before the first step ---------------------------------------------


def fails_before_training(run, *messages):
    assert run.returncode != 0
    assert "Train:" not in run.output and "'loss':" not in run.output, "training started"
    for message in messages:
        assert message in run.output, f"{message!r} not in:\n{run.output[-4000:]}"


def test_missing_reward_column_names_the_column_and_dataset(swift_runs, data_dir):
    path = write_jsonl(data_dir / "no_reward.jsonl", [{"messages": r["messages"]} for r in rows()])
    run = train(swift_runs, data_dir, "bad_missing", *BATCH6, "--loss_type", "rift", data=path.name)
    fails_before_training(run, f"dataset {str(path)!r} must have a 'reward' column", "RIFT_REWARD_COLUMN")


def test_non_numeric_reward_names_the_row(swift_runs, data_dir):
    bad = rows()
    bad[2]["reward"] = "wrong"
    path = write_jsonl(data_dir / "text_reward.jsonl", bad)
    run = train(swift_runs, data_dir, "bad_text", *BATCH6, "--loss_type", "rift", data=path.name)
    fails_before_training(
        run, f"reward must be a finite number in every row, got 'wrong' in row 2 of dataset {str(path)!r}"
    )


def test_non_finite_reward_names_the_row(swift_runs, data_dir):
    path = data_dir / "nan_reward.jsonl"
    lines = [json.dumps(r) for r in rows()]
    lines[4] = lines[4].replace('"reward": 1.0', '"reward": NaN')
    path.write_text("\n".join(lines) + "\n")
    run = train(swift_runs, data_dir, "bad_nan", *BATCH6, "--loss_type", "rift_gpg_mean", data=path.name)
    fails_before_training(run, f"got nan in row 4 of dataset {str(path)!r}")


def test_unknown_knob_value_is_refused(swift_runs, data_dir):
    run = train(swift_runs, data_dir, "bad_knob", *BATCH6, "--loss_type", "rift", env={"RIFT_LEVEL": "response"})
    fails_before_training(run, "RIFT_LEVEL must be one of 'token', 'sequence', got 'response'")


def test_unsupported_options_are_refused_with_reasons(swift_runs, data_dir):
    run = train(
        swift_runs,
        data_dir,
        "bad_options",
        *BATCH6,
        "--loss_type",
        "rift",
        "--enable_dft_loss",
        "true",
        "--enable_channel_loss",
        "true",
        "--sequence_parallel_size",
        "2",
    )
    fails_before_training(
        run,
        "--sequence_parallel_size must be 1 with --loss_type rift, got 2",
        "--enable_dft_loss cannot be combined with --loss_type rift",
        "--enable_channel_loss cannot be combined with --loss_type rift",
    )
    assert "Loading weights" not in run.output  # refused before the model is loaded


def test_one_string_or_bool_reward_among_numbers_is_refused_before_the_model_loads(swift_runs, data_dir):
    # `datasets` 4.x loads a column of numbers with one "1.0" as its Json feature, which reads back the
    # number 1.0: the adapter checks the file's raw values, before MS-Swift loads the model.
    text = rows()
    text[3]["reward"] = "1.0"
    jsonl = write_jsonl(data_dir / "one_string_reward.jsonl", text)
    run = train(swift_runs, data_dir, "bad_one_string", *BATCH6, "--loss_type", "rift", data=jsonl.name)
    fails_before_training(
        run,
        f"reward must be a finite number in every row, got '1.0' in row 3 of dataset "
        f"{str(jsonl)!r} (line 4) (a JSON number, not a string",
    )
    assert "Loading weights" not in run.output  # refused before the model is loaded
    flag = rows()
    flag[1]["reward"] = True
    array = data_dir / "one_bool_reward.json"
    array.write_text(json.dumps(flag))  # a JSON array file
    run = train(swift_runs, data_dir, "bad_one_bool", *BATCH6, "--loss_type", "rift_gpg_mean", data=array.name)
    fails_before_training(run, f"got True in row 1 of dataset {str(array)!r} (a JSON number, not a bool")
    assert "Loading weights" not in run.output


def test_misspelt_rift_loss_type_is_refused_before_the_model_loads(swift_runs, data_dir):
    run = train(swift_runs, data_dir, "bad_loss_type", *BATCH6, "--loss_type", "rift_gauss")
    fails_before_training(
        run,
        "--loss_type must be one of rift-losses' rift_naive, rift, rift_gaussian, rift_gpg_mean, "
        "rift_gpg_scaled (or an MS-Swift loss type), got 'rift_gauss'; did you mean 'rift_gaussian'?",
    )
    assert "Loading weights" not in run.output and "KeyError" not in run.output


def test_degenerate_groups_warn_that_the_run_trains_nothing(swift_runs, data_dir):
    # every row its own group: gaussian normalization gives 0 everywhere, so loss and gradient are 0
    path = write_jsonl(data_dir / "single_row_groups.jsonl", [{**r, "group": f"p{i}"} for i, r in enumerate(rows())])
    run = train(
        swift_runs, data_dir, "degenerate_groups", *BATCH6, "--loss_type", "rift_gaussian", data=path.name, steps=1
    ).ok()
    assert (
        f"rift-losses: dataset {str(path)!r}: all 6 rewards are 0 after gaussian normalization within 6 groups"
        in run.output
    )
    assert "a group of one row, or whose rewards are all equal, normalizes to 0" in run.output
    assert "this run trains NOTHING on this dataset" in run.output
    assert run.train[0]["loss"] == 0 and run.train[0]["grad_norm"] == 0
    assert "Loading weights" in run.output  # what the refusals above never reach
