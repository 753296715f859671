"""Per-turn rewards in the data command: convert keeps them, stats counts turns, normalize refuses them."""

from __future__ import annotations

import pytest

from rift_losses.data import convert, normalize, stats
from rift_losses.data._io import DataError

from datahelpers import read_jsonl, write_jsonl


def _trajectory(first, second, *, row=None, group="task-17"):
    messages = [
        {"role": "user", "content": "Find the file."},
        {"role": "assistant", "content": "<tool_call>ls</tool_call>", "reward": first},
        {"role": "tool", "content": "a.txt b.txt"},
        {"role": "assistant", "content": "It is c.txt."},
    ]
    if second is not None:
        messages[3]["reward"] = second
    out = {"messages": messages, "group": group}
    if row is not None:
        out["reward"] = row
    return out


ROWS = [_trajectory(1.0, -0.2), _trajectory(-0.5, 1.0), _trajectory(0.0, None, row=0.4), _trajectory(1.0, 0.5)]


def test_convert_keeps_each_messages_reward(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    summary = convert(src, tmp_path / "out.jsonl", to="swift", progress="none")
    out = read_jsonl(tmp_path / "out.jsonl")
    assert summary["rows_with_turn_rewards"] == 4
    assert [[m.get("reward") for m in r["messages"]] for r in out] == [
        [None, 1.0, None, -0.2],
        [None, -0.5, None, 1.0],
        [None, 0.0, None, None],
        [None, 1.0, None, 0.5],
    ]
    assert "reward" not in out[0] and out[2]["reward"] == 0.4  # a row reward is kept only where the row has one
    renamed = [
        {**r, "messages": [{("score" if k == "reward" else k): v for k, v in m.items()} for m in r["messages"]]}
        for r in ROWS[:1]
    ]
    src = write_jsonl(tmp_path / "score.jsonl", renamed)
    from rift_losses.data._rows import Fields

    convert(src, tmp_path / "s.jsonl", to="swift", fields=Fields(reward="score"), progress="none")
    assert [m.get("reward") for m in read_jsonl(tmp_path / "s.jsonl")[0]["messages"]] == [None, 1.0, None, -0.2]


def test_convert_to_llamafactory_names_the_message_reward_key_in_the_tags(tmp_path):
    """LLaMA-Factory's adapter reads per-message rewards only where the entry's tags carry reward_tag."""
    import json

    def talk(first, second):
        return {
            "messages": [
                {"role": "user", "content": "Find the file."},
                {"role": "assistant", "content": "ls", "reward": first},
                {"role": "user", "content": "a.txt b.txt"},
                {"role": "assistant", "content": "It is c.txt.", "reward": second},
            ]
        }

    src = write_jsonl(tmp_path / "turns.jsonl", [talk(1.0, -0.2), talk(-0.5, 1.0)])
    convert(src, tmp_path / "lf" / "turns.jsonl", to="llamafactory", progress="none")
    plain = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "p", "response": "r", "reward": 1.0}])
    convert(plain, tmp_path / "lf" / "rows.jsonl", to="llamafactory", progress="none")
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    assert info["turns"]["tags"]["reward_tag"] == "reward"
    assert info["turns"]["tags"]["role_tag"] == "role" and info["turns"]["tags"]["assistant_tag"] == "assistant"
    assert "reward_tag" not in info["rows"]["tags"]
    # no row has a reward of its own: no reward column to map (LLaMA-Factory would refuse a missing one)
    assert "reward" not in info["turns"]["columns"] and info["rows"]["columns"]["reward"] == "reward"
    assert [m.get("reward") for m in read_jsonl(tmp_path / "lf" / "turns.jsonl")[0]["messages"]] == [
        None,
        1.0,
        None,
        -0.2,
    ]


def test_stats_counts_turns_by_sign(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS + [{"prompt": "p", "response": "r", "reward": -1.0, "group": "p"}])
    s = stats(src, progress="none")
    assert (s["turns"], s["turns_positive"], s["turns_negative"], s["turns_zero"]) == (9, 5, 3, 1)
    assert s["rows_with_turn_rewards"] == 4
    # a row without its own reward counts in Table 1 by its last turn: -0.2, 1.0; then rows 0.4, 0.5, -1.0
    assert (s["responses"], s["positive"], s["negative"]) == (5, 3, 2)


def test_normalize_refuses_per_turn_rewards_with_the_reason(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    with pytest.raises(DataError, match="must not carry per-message 'reward' values for normalize"):
        normalize(src, tmp_path / "out.jsonl", method="gaussian", progress="none")


@pytest.mark.parametrize(
    "bad,match",
    [
        (
            {"role": "user", "content": "Find the file.", "reward": 1.0},
            r"\[0\]\.reward must be on an assistant message",
        ),
        ({"role": "user", "content": "Find the file."}, None),
    ],
)
def test_bad_turn_rewards_name_the_message(tmp_path, bad, match):
    row = _trajectory(1.0, None)  # the last assistant turn has no reward and the row has none
    row["messages"][0] = bad
    src = write_jsonl(tmp_path / "in.jsonl", [row])
    expected = match or r"\[3\] \(an assistant message\) must carry 'reward', or the row must, got neither"
    with pytest.raises(DataError, match=expected):
        stats(src, progress="none")
    string = _trajectory("1.0", 0.5)
    src = write_jsonl(tmp_path / "s.jsonl", [string])
    with pytest.raises(DataError, match=r"field 'messages'\[1\]\.reward must be a finite number, got '1.0'"):
        convert(src, tmp_path / "out.jsonl", to="swift", progress="none")
