"""The task `make reproduce` ships (reproduce/task.py): disjoint splits, exact answers that math-verify grades."""

from __future__ import annotations

import sys

from datahelpers import REPO, make_runner, read_jsonl, write_jsonl

sys.path.insert(0, str(REPO / "reproduce"))
import task  # noqa: E402


def test_splits_are_disjoint_and_seeded():
    a = task.make_splits({"base": 300, "train": 50, "val": 20, "eval": 40})
    b = task.make_splits({"base": 300, "train": 50, "val": 20, "eval": 40})
    assert a == b
    prompts = [r["messages"][0]["content"] for rows in a.values() for r in rows]
    assert len(prompts) == len(set(prompts)) == 410


def test_reference_solutions_are_graded_correct_and_a_slip_wrong(tmp_path, capsys):
    rows = task.make_splits({"eval": 60})["eval"]
    for row in rows:  # the worked steps compute the answer
        steps = row["messages"][1]["content"].split(". ")
        assert steps[-1] == f"The answer is {row['answer']}."
    slip = [
        {
            **row,
            "messages": [
                row["messages"][0],
                {"role": "assistant", "content": f"The answer is {int(row['answer']) + 1}."},
            ],
        }
        for row in rows
    ]
    write_jsonl(tmp_path / "s.jsonl", rows + slip)
    cli = make_runner(capsys)
    res = cli("label", tmp_path / "s.jsonl", "-o", tmp_path / "l.jsonl")
    assert res.code == 0, res.err
    assert [r["reward"] for r in read_jsonl(tmp_path / "l.jsonl")] == [1.0] * 60 + [-0.2] * 60


def test_the_tokenizer_corpus_is_the_online_protocols_splits():
    # make reproduce's tokenizer no longer follows its own sizes (version 3's new sizes gave a new base); the
    # fixed corpus is the splits the online protocol was measured on, so its tokenizer did not change either
    import online

    assert online.PROTOCOL["sizes"] == task.TOKENIZER_SPLITS
    split_rows = task.make_splits(online.PROTOCOL["sizes"]).values()
    assert task.tokenizer_corpus() == task.corpus_of([r for rows in split_rows for r in rows])
