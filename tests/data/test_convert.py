"""`rift-losses convert --to swift|llamafactory`: the host layouts and the dataset_info.json entry."""

from __future__ import annotations

import json

import pytest

from datahelpers import read_jsonl, write_jsonl

CHAT = [
    {"role": "system", "content": "Solve."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "\\boxed{4}"},
]


def _labelled():
    return [
        {"prompt": "What is 2+3?", "response": "2 + 3 = 5. The answer is 5.", "answer": "5", "reward": 1.0, "id": 0},
        {"prompt": "What is 2+3?", "response": "The answer is 6.", "answer": "5", "reward": -0.2, "id": 1},
        {"messages": CHAT, "answer": "4", "reward": 1.0},
    ]


@pytest.mark.parametrize("host", ["swift", "llamafactory"])
def test_convert_writes_messages_reward_group(tmp_path, run, host):
    src = write_jsonl(tmp_path / "in.jsonl", _labelled())
    res = run("convert", src, "-o", tmp_path / "out" / "buf.jsonl", "--to", host, "--json")
    assert res.code == 0, res.err
    out = read_jsonl(tmp_path / "out" / "buf.jsonl")
    assert [list(r) for r in out] == [["messages", "reward", "group"]] * 3
    assert out[0]["messages"] == [
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "2 + 3 = 5. The answer is 5."},
    ]
    assert out[2]["messages"] == CHAT  # chat rows pass through, system message included
    assert [r["reward"] for r in out] == [1.0, -0.2, 1.0]
    # groups by prompt: the two samples of "2+3" share one id, the chat row has another
    assert out[0]["group"] == out[1]["group"] != out[2]["group"] and len(out[0]["group"]) == 16
    s = res.json()
    assert (s["rows"], s["groups"]) == (3, 2)
    assert s["not_written"] == {"answer": 3, "id": 2}  # reported, never silently dropped
    assert "dataset_info" in s if host == "llamafactory" else "dataset_info" not in s
    text = run("convert", src, "-o", tmp_path / "o2.jsonl", "--to", host).out
    assert "not written (the host does not read them): answer (3 rows), id (2 rows)" in text


def test_convert_llamafactory_dataset_info_entry_is_merged(tmp_path, run):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(json.dumps({"alpaca_demo": {"file_name": "alpaca.json"}}))
    src = write_jsonl(tmp_path / "in.jsonl", _labelled())
    res = run(
        "convert",
        src,
        "-o",
        data / "rift" / "buffer.jsonl",
        "--to",
        "llamafactory",
        "--dataset-name",
        "my_buffer",
        "--dataset-info",
        data / "dataset_info.json",
    )
    assert res.code == 0, res.err
    info = json.loads((data / "dataset_info.json").read_text())
    assert info["alpaca_demo"] == {"file_name": "alpaca.json"}  # other datasets kept
    assert info["my_buffer"] == {
        "file_name": "rift/buffer.jsonl",  # relative to the dataset_dir that holds dataset_info.json
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "reward": "reward", "group": "group"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }
    assert "added dataset 'my_buffer'" in res.out
    res = run(
        "convert",
        src,
        "-o",
        data / "rift" / "buffer.jsonl",
        "--to",
        "llamafactory",
        "--dataset-name",
        "my_buffer",
        "--dataset-info",
        data / "dataset_info.json",
    )
    assert "replaced dataset 'my_buffer'" in res.out


def test_convert_group_field_is_carried(tmp_path, run):
    rows = [{"prompt": "p", "response": str(i), "reward": 1.0, "problem": i // 2} for i in range(4)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    res = run("convert", src, "-o", tmp_path / "out.jsonl", "--to", "swift", "--group-field", "problem", "--json")
    assert res.code == 0, res.err
    assert [r["group"] for r in read_jsonl(tmp_path / "out.jsonl")] == [0, 0, 1, 1]
    assert res.json()["not_written"] == {}


def test_convert_llamafactory_refuses_what_it_would_drop(tmp_path, run):
    """LLaMA-Factory's sharegpt reader skips conversations whose roles do not alternate: refuse them here."""
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]
    src = write_jsonl(tmp_path / "in.jsonl", [{"messages": CHAT, "reward": 1.0}, {"messages": bad, "reward": 1.0}])
    res = run("convert", src, "-o", tmp_path / "out.jsonl", "--to", "llamafactory")
    assert res.code == 1
    assert (
        f"{src}:2: field 'messages' must be an optional 'system' message then 'user'/'assistant' turns in turn"
        in res.err
    )
    assert "got roles ['user', 'user', 'assistant']" in res.err
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "dataset_info.json").exists()
    assert run("convert", src, "-o", tmp_path / "out.jsonl", "--to", "swift").code == 0  # MS-Swift's templates take it


def test_convert_unknown_host(tmp_path, run):
    src = write_jsonl(tmp_path / "in.jsonl", _labelled())
    with pytest.raises(SystemExit) as exc:
        run("convert", src, "-o", tmp_path / "out.jsonl", "--to", "axolotl")
    assert exc.value.code == 2
    from rift_losses.data import convert

    with pytest.raises(ValueError, match="to must be one of 'swift', 'llamafactory', got 'axolotl'"):
        convert(src, tmp_path / "out.jsonl", to="axolotl")
