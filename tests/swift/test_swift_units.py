"""The host-free parts: integrations/_common.py and the adapter's knobs and refusals (no MS-Swift import)."""

from __future__ import annotations

import math
import statistics
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import rift_losses
from rift_losses.integrations import _common
from rift_losses.integrations._core import stats as core_stats
from rift_losses.integrations.swift import config

# --- loss type names come from the core registries ---------------------------------------------


def test_loss_types_are_built_from_the_core_registries():
    assert config.LOSS_TYPES == {
        "rift": ("rift", None),
        "rift_naive": ("naive", None),
        "rift_gaussian": ("rift", "gaussian"),
        "rift_gpg_mean": ("rift", "gpg_mean"),
        "rift_gpg_scaled": ("rift", "gpg_scaled"),
    }
    for core, method in config.LOSS_TYPES.values():
        assert core in rift_losses.LOSSES and (method is None or method in rift_losses.NORMALIZATIONS)
    assert len(config.LOSS_TYPES) == len(rift_losses.LOSSES) + len(rift_losses.NORMALIZATIONS)


# --- rewards and groups per row --------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected", [(1, 1.0), (-0.2, -0.2), (np.float32(0.5), 0.5), (np.int64(-1), -1.0), (0, 0.0)]
)
def test_read_reward_accepts_numbers(value, expected):
    assert _common.read_reward(value, column="reward", where="row 0") == pytest.approx(expected)


@pytest.mark.parametrize("value", [True, "1.0", None, float("nan"), float("inf"), -math.inf, [1.0], {"r": 1}])
def test_read_reward_refuses_what_is_not_a_finite_number(value):
    with pytest.raises(ValueError, match=r"reward must be a finite number in every row, got .* in row 7 of x"):
        _common.read_reward(value, column="reward", where="row 7 of x")


def test_read_rewards_names_the_first_bad_row_and_the_dataset():
    with pytest.raises(
        ValueError, match=r"score must be a finite number in every row, got None in row 2 of dataset 'd.jsonl'"
    ):
        _common.read_rewards([1.0, -0.2, None, "x"], column="score", dataset="d.jsonl")
    assert _common.read_rewards([1, -0.2], column="score", dataset="d") == [1.0, -0.2]


def test_prompt_key_is_every_message_before_the_last_assistant_turn():
    system = {"role": "system", "content": "s"}
    user = {"role": "user", "content": "q"}
    a = [system, user, {"role": "assistant", "content": "right"}]
    b = [system, {"content": "q", "role": "user"}, {"role": "assistant", "content": "wrong"}]
    assert _common.prompt_key(a) == _common.prompt_key(b)  # key order inside a message does not matter
    assert _common.prompt_key(a) != _common.prompt_key(a[1:])  # the system prompt is part of the prompt
    multi = [
        user,
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": "y"},
    ]
    assert _common.prompt_key(multi) == _common.prompt_key(multi[:3] + [{"role": "assistant", "content": "z"}])
    assert _common.prompt_key(a, {"images": ["a.png"]}) != _common.prompt_key(a, {"images": ["b.png"]})
    assert _common.prompt_key(a, {"images": [{"bytes": b"\x00", "path": None}]})  # bytes are hashed
    with pytest.raises(ValueError, match="must hold an assistant turn"):
        _common.prompt_key([user])


@pytest.mark.parametrize("value", [None, True, [1], {"g": 1}, float("nan")])
def test_read_group_refuses_non_ids(value):
    with pytest.raises(
        ValueError, match=r"group must be a string or a number in every row when the column exists, got .* in row 3"
    ):
        _common.read_group(value, column="group", where="row 3")


def test_read_group_keeps_strings_and_numbers_apart():
    keys = [_common.read_group(v, column="group", where="") for v in ("1", 1, "a", 1)]
    assert keys[0] != keys[1] and keys[1] == keys[3]


@pytest.mark.parametrize("method", sorted(rift_losses.NORMALIZATIONS))
def test_normalize_dataset_rewards_over_whole_groups(method):
    rewards = [1.0, -0.2, -0.2, 1.0, 1.0, -0.2, 0.5, 0.5]
    groups = ["a", "a", "b", "a", "b", "b", "c", "c"]  # groups interleaved; "c" all equal
    got = _common.normalize_dataset_rewards(rewards, groups, method=method)
    for i, (r, g) in enumerate(zip(rewards, groups)):
        members = [x for x, h in zip(rewards, groups) if h == g]
        mu, sigma, alpha = (
            statistics.fmean(members),
            statistics.pstdev(members),
            sum(x > 0 for x in members) / len(members),
        )
        want = {
            "gaussian": (r - mu) / sigma if sigma else 0.0,
            "gpg_mean": alpha * (r - mu) if sigma else 0.0,
            "gpg_scaled": alpha * r,
        }[method]
        assert got[i] == pytest.approx(want, abs=1e-12), (i, g)


def test_per_token_rewards_and_negative_counts():
    assert _common.per_token_rewards([1.0, -0.2], [2, 3]) == [1.0, 1.0, -0.2, -0.2, -0.2]
    with pytest.raises(ValueError, match="one value per packed sample"):
        _common.per_token_rewards([1.0], [2, 3])
    assert _common.count_negative([1.0, -0.2, "x", None, -1, float("nan")]) == (2, 3)


def test_stats_accumulator_sums_calls_like_one_batch():
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 11)
    labels = torch.randint(0, 11, (4, 6))
    labels[:, :2] = -100
    rewards = torch.tensor([1.0, -0.2, 0.5, -1.0])
    n = int((labels != -100).sum())
    acc = core_stats.StatsAccumulator()
    total = 0.0
    for rows in (slice(0, 1), slice(1, 4)):  # two micro-batches, one global denominator
        loss, stats = rift_losses.rift_loss(
            logits[rows], labels[rows], rewards[rows], num_items_in_batch=n, return_stats=True
        )
        acc.add(stats, scale=2.0)
        total += float(loss)
    full, full_stats = rift_losses.rift_loss(logits, labels, rewards, return_stats=True)
    summary = core_stats.stats_summary(acc.totals().tolist(), units=1, world_size=2)
    assert summary["pos_loss"] + summary["neg_loss"] == pytest.approx(float(full), rel=1e-6)
    assert summary["pos_loss"] == pytest.approx(float(full_stats.pos_loss), rel=1e-6)
    assert (summary["pos_tokens"], summary["neg_tokens"]) == (
        float(full_stats.pos_tokens),
        float(full_stats.neg_tokens),
    )
    assert summary["neg_prob"] == pytest.approx(float(full_stats.neg_prob_mean), rel=1e-6)
    assert core_stats.stats_summary(acc.totals().tolist(), units=0)["pos_loss"] is None
    acc.reset()
    assert acc.totals().sum() == 0


def test_negative_reward_warning_says_what_happens():
    text = _common.negative_reward_warning(dataset="d.jsonl", column="reward", negatives=3, rows=6, loss="x", hint="h")
    assert "3 of 6 rows with reward < 0" in text and "WRONG responses" in text and "d.jsonl" in text


# --- raw rewards of JSON files, mixed column types, all-zero rewards, misspelt loss types ---------


def test_check_json_rewards_reads_the_raw_values_of_json_lines_and_arrays(tmp_path):
    import json

    lines = tmp_path / "r.jsonl"
    lines.write_text('{"reward": 1}\n\n{"reward": -0.2}\n{"reward": "1.0"}\n')  # blank lines are not rows
    with pytest.raises(
        ValueError,
        match=r"""got '1.0' in row 2 of dataset 'd' \(file '.*r.jsonl', line 4\) \(a JSON number, not a string""",
    ):
        _common.check_json_rewards(str(lines), column="reward", dataset="d")
    array = tmp_path / "r.json"
    array.write_text(json.dumps([{"reward": 1.0}, {"reward": False}]))
    with pytest.raises(ValueError, match=r"got False in row 1 of dataset 'd' \(file .*\) \(a JSON number, not a bool"):
        _common.check_json_rewards(str(array), column="reward", dataset="d")
    array.write_text(json.dumps([{"reward": 1.0}, {"other": 2}]))
    with pytest.raises(ValueError, match=r"got no 'reward' key in row 1 of dataset"):
        _common.check_json_rewards(str(array), column="reward", dataset="d")
    array.write_text(json.dumps([{"reward": 1}, {"reward": -0.2}]))
    assert _common.check_json_rewards(str(array), column="reward", dataset="d") == 2
    assert _common.check_json_rewards(str(array), column="score", dataset="d") is None  # no such column here
    assert _common.check_json_rewards(str(tmp_path / "r.parquet"), column="reward", dataset="d") is None


def test_mixed_json_column_names_the_column_and_both_rows(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"group": 1, "r": null}\n{"group": 2, "r": 1.0}\n{"group": "1", "r": 2}\n')
    assert _common.mixed_json_column(str(path)) == (
        f"column 'group' mixes JSON types: '1' (a string) in row 2 (line 3) of {str(path)!r}, 1 (a number) in row "
        "0 (line 1)"
    )
    path.write_text('{"group": 1, "r": null}\n{"group": 2, "r": 1.0}\n')
    assert _common.mixed_json_column(str(path)) is None


def test_zero_rewards_warning_only_when_every_reward_is_zero():
    assert (
        _common.zero_rewards_warning(
            [0.0, 0.5], [1.0, 0.5], dataset="d", column="reward", normalization=None, groups=None, hint="h"
        )
        is None
    )
    raw = _common.zero_rewards_warning(
        [0.0, 0.0], [0.0, 0.0], dataset="d", column="reward", normalization="gaussian", groups=1, hint="h"
    )
    assert (
        "dataset 'd': all 2 rows have reward = 0." in raw
        and "trains NOTHING" in raw
        and raw.rstrip("!\n").endswith("h")
    )
    normalized = _common.normalize_dataset_rewards([1.0, -0.2, -0.2], ["a", "b", "b"], method="gaussian")
    text = _common.zero_rewards_warning(
        normalized, [1.0, -0.2, -0.2], dataset="d", column="reward", normalization="gaussian", groups=2, hint="h"
    )
    assert "all 3 rewards are 0 after gaussian normalization within 2 groups" in text


@pytest.mark.parametrize(
    "loss_type, close",
    [
        ("rift_gauss", "rift_gaussian"),
        ("RIFT", "rift"),
        ("rift_gpg", "rift_gpg_mean"),
        ("rift_dpo", None),
        ("rfit", "rift"),
    ],
)
def test_misspelt_rift_loss_types_are_refused_with_a_suggestion(loss_type, close):
    suggestion = rf"; did you mean '{close}'\?" if close else "$"
    with pytest.raises(
        ValueError, match=rf"--loss_type must be one of rift-losses' rift_naive, rift, .* got '{loss_type}'{suggestion}"
    ):
        config.check_loss_type(loss_type, ["cross_entropy"])


@pytest.mark.parametrize("loss_type", [None, "rift", "rift_gpg_scaled", "cross_entropy", "infonce", "rift_custom"])
def test_known_and_unrelated_loss_types_pass(loss_type):
    config.check_loss_type(loss_type, ["cross_entropy", "rift_custom"])  # rift_custom: another plugin's registration


def test_columns_loaded_with_mixed_json_types_are_refused(tmp_path):
    # What `datasets` 4.x makes of a hub or folder dataset (no raw file to read): a Json feature that
    # reads a string "1.0" back as the number 1.0 and the group "1" as the group 1.
    from datasets import load_dataset

    from rift_losses.integrations.swift import _datasets

    path = tmp_path / "m.jsonl"
    path.write_text('{"reward": 1.0, "group": 1}\n{"reward": "1.0", "group": 2}\n')
    loaded = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded["reward"][1] == 1.0  # the silent conversion
    run = _datasets.Run("rift_gaussian", "rift", "gaussian", config.Knobs())
    with pytest.raises(
        ValueError,
        match=r"reward must be a JSON number in every row of dataset 'm' for --loss_type rift_gaussian, got a "
        r"column that mixes",
    ):
        _datasets._check_raw_rewards(loaded, name="m", run=run)
    path.write_text('{"reward": 1.0, "group": 1}\n{"reward": -0.2, "group": "1"}\n')
    loaded = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache2"))
    with pytest.raises(
        ValueError, match=r"group must hold one JSON type \(all strings or all numbers\) in dataset 'm'"
    ):
        _datasets._check_raw_rewards(loaded, name="m", run=run)


# --- knobs ------------------------------------------------------------------------------------


def test_knob_defaults_need_no_environment():
    assert config.read_knobs({}) == config.Knobs(reward_column="reward", group_column="group", level="token")
    assert set(config.KNOBS) == {
        "RIFT_REWARD_COLUMN",
        "RIFT_GROUP_COLUMN",
        "RIFT_LEVEL",
        "RIFT_INPLACE_GRAD",
        "RIFT_FUSED_HEAD",
    }
    assert config.read_knobs({}).inplace_grad is True  # the logits gradient in place by default
    assert config.read_knobs({}).fused_head is True  # the fused LM head by default


def test_fused_head_knob_is_a_strict_switch():
    assert config.read_knobs({"RIFT_FUSED_HEAD": "0"}).fused_head is False
    with pytest.raises(ValueError, match="RIFT_FUSED_HEAD must be one of '1', '0', got 'no'"):
        config.read_knobs({"RIFT_FUSED_HEAD": "no"})


def test_inplace_grad_knob_is_a_strict_switch():
    assert config.read_knobs({"RIFT_INPLACE_GRAD": "0"}).inplace_grad is False
    assert config.read_knobs({"RIFT_INPLACE_GRAD": "1"}).inplace_grad is True
    with pytest.raises(ValueError, match="RIFT_INPLACE_GRAD must be one of '1', '0', got 'false'"):
        config.read_knobs({"RIFT_INPLACE_GRAD": "false"})
    with pytest.raises(ValueError, match="did you mean RIFT_INPLACE_GRAD"):
        config.read_knobs({"RIFT_INPLACE_GRADS": "0"})


def test_knob_values_are_read_and_checked():
    knobs = config.read_knobs({"RIFT_REWARD_COLUMN": "score", "RIFT_GROUP_COLUMN": "problem", "RIFT_LEVEL": "sequence"})
    assert (knobs.reward_column, knobs.group_column, knobs.level) == ("score", "problem", "sequence")
    assert knobs.group_column_given and not config.read_knobs({}).group_column_given
    with pytest.raises(ValueError, match="RIFT_LEVEL must be one of 'token', 'sequence', got 'tokens'"):
        config.read_knobs({"RIFT_LEVEL": "tokens"})
    with pytest.raises(ValueError, match="RIFT_REWARD_COLUMN must be a non-empty column name"):
        config.read_knobs({"RIFT_REWARD_COLUMN": " reward"})
    with pytest.raises(ValueError, match="RIFT_GROUP_COLUMN must differ from RIFT_REWARD_COLUMN"):
        config.read_knobs({"RIFT_REWARD_COLUMN": "x", "RIFT_GROUP_COLUMN": "x"})


def test_misspelt_knob_names_are_caught_but_other_rift_variables_are_not():
    with pytest.raises(
        ValueError, match="environment variable RIFT_LEVL must be one of the rift-losses knobs.*did you mean RIFT_LEVEL"
    ):
        config.read_knobs({"RIFT_LEVL": "sequence"})
    with pytest.raises(ValueError, match="did you mean RIFT_REWARD_COLUMN"):
        config.read_knobs({"RIFT_REWARDS_COLUMN": "score"})
    assert config.read_knobs({"RIFT_LOSSES_AUTOLOAD": "0", "RIFT_SOMETHING_ELSE": "1"}).level == "token"


# --- refusals ---------------------------------------------------------------------------------


def args(**kw):
    base = {
        "loss_type": "rift",
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
    base.update(kw)
    return SimpleNamespace(**base)


def test_defaults_are_not_refused():
    assert config.refusals(args(), config.Knobs()) == []
    assert config.refusals(args(padding_free=True), config.Knobs()) == []
    config.check_args(args(packing=True), config.Knobs())


@pytest.mark.parametrize(
    "override, knobs, message",
    [
        (
            {"sequence_parallel_size": 4},
            config.Knobs(),
            "--sequence_parallel_size must be 1 with --loss_type rift, got 4",
        ),
        ({"enable_dft_loss": True}, config.Knobs(), "--enable_dft_loss cannot be combined"),
        ({"enable_channel_loss": True}, config.Knobs(), "--enable_channel_loss cannot be combined"),
        ({"streaming": True}, config.Knobs(), "--streaming must be false"),
        ({"cached_dataset": ["x"]}, config.Knobs(), "--cached_dataset cannot be used"),
        ({"rlhf_type": "dpo"}, config.Knobs(), "--rlhf_type dpo cannot be used"),
        ({"task_type": "seq_cls"}, config.Knobs(), "--task_type must be causal_lm"),
        (
            {"packing": True},
            config.Knobs(level="sequence"),
            "RIFT_LEVEL=sequence cannot be used with --padding_free/--packing",
        ),
    ],
)
def test_unsupported_options_are_refused_with_the_reason(override, knobs, message):
    with pytest.raises(ValueError, match="rift-losses cannot train with these MS-Swift arguments") as info:
        config.check_args(args(**override), knobs)
    assert message in str(info.value)


def test_docs_page_documents_every_loss_type_and_knob():
    from pathlib import Path

    section = (Path(__file__).parents[2] / "docs" / "swift.md").read_text()
    for name in config.LOSS_TYPES:
        assert f"`{name}`" in section, name
    for knob, (default, _) in config.KNOBS.items():
        assert f"| `{knob}` | `{default}` |" in section, knob
    assert "python -m rift_losses.integrations.swift" in section


# --- per-turn rewards: runs of trained labels -> turns ------------------------------------------


def test_label_spans_and_span_token_rewards():
    from rift_losses.integrations._core.turns import label_spans, span_token_rewards

    labels = [-100, 5, 6, -100, -100, 7, -100, 8, 9]
    assert label_spans(labels) == [(1, 3), (5, 6), (7, 9)]
    assert label_spans([-100, -100]) == [] and label_spans([1, 2]) == [(0, 2)]
    assert span_token_rewards(labels, [1.0, 0.0, -0.5]) == [0, 1, 1, 0, 0, 0, 0, -0.5, -0.5]
    assert span_token_rewards(labels, [1.0, 0.0]) is None  # two rewards for three runs: not guessed


def _turn_row(*messages):
    return [{"role": "user", "content": "q"}, *messages]


def test_swift_turns_follow_msswifts_merging_and_loss_marks():
    from rift_losses.integrations.swift._turns import encoded_token_rewards

    call, answer = {"role": "assistant", "content": "c"}, {"role": "assistant", "content": "a"}
    tool = {"role": "tool", "content": "t"}
    labels = [-100, 1, 1, -100, -100, 2, 2, 2]
    turns = {"where": "row 4 of dataset 'd'", "rewards": [1.0, -0.5]}
    tokens, error = encoded_token_rewards(labels, _turn_row(call, tool, answer), turns, None)
    assert error is None and tokens == [0, 1, 1, 0, 0, -0.5, -0.5, -0.5]
    # loss: false leaves its message untrained: the one run is the answer's
    untrained = {**call, "loss": False}
    answer_only = {"where": "row 4 of dataset 'd'", "rewards": [-0.5]}  # what the raw row gives: trained messages
    tokens, error = encoded_token_rewards([-100, -100, 2, 2], _turn_row(untrained, tool, answer), answer_only, None)
    assert error is None and tokens == [0, 0, -0.5, -0.5]
    # consecutive assistant messages are one response in MS-Swift: one reward, or an error
    tokens, error = encoded_token_rewards([-100, 1, 1, 1], _turn_row(call, answer), turns, None)
    assert tokens is None and "consecutive assistant/tool_call messages must have one reward" in error
    same = {"where": "row 4 of dataset 'd'", "rewards": [0.3, 0.3]}
    assert encoded_token_rewards([-100, 1, 1], _turn_row(call, answer), same, None) == ([0, 0.3, 0.3], None)
    # a tool_call message is part of the assistant turn next to it
    tool_call = {"role": "tool_call", "content": "{}"}
    one = {"where": "row 4 of dataset 'd'", "rewards": [0.7]}
    assert encoded_token_rewards([-100, 1, 1], _turn_row(answer, tool_call), one, None) == ([0, 0.7, 0.7], None)
    # a run count that does not match the trained turns is refused, not guessed
    tokens, error = encoded_token_rewards([-100, 2, 2], _turn_row(call, tool, answer), turns, None)
    assert tokens is None and "row 4 of dataset 'd'" in error and "got 1 runs for 2 trained turns" in error
    last = {**answer, "loss": False}
    tokens, error = encoded_token_rewards(labels, _turn_row(call, tool, last), one, None)
    assert tokens is None and "last assistant message has loss: false" in error


def test_raw_turn_rewards_read_msswifts_role_aliases():
    from rift_losses.integrations.swift._turns import raw_turn_rewards

    conversation = [
        {"from": "human", "value": "q"},
        {"from": "gpt", "value": "c", "reward": 1.0},
        {"from": "observation", "value": "t"},
        {"from": "gpt", "value": "a"},
    ]
    assert raw_turn_rewards(conversation, 0.5, column="reward", where="row 0") == [1.0, 0.5]
    assert raw_turn_rewards(conversation[:2] + [{"from": "gpt", "value": "x"}], None, column="score", where="r") is None
    with pytest.raises(ValueError, match=r"reward must be on assistant messages only, .* message 2 \(role 'tool'\)"):
        raw_turn_rewards(
            [*conversation[:2], {"from": "observation", "value": "t", "reward": 1}], 0.5, column="reward", where="r"
        )
