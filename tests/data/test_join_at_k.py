"""`rift-losses join` (reference answers onto sampled responses) and `rift-losses stats --k` (mean@k, pass@k)."""

from __future__ import annotations

import hashlib
import json
from itertools import combinations
from math import comb

import pytest

from rift_losses.data.at_k import pass_at_k

from datahelpers import make_runner, read_jsonl, run_command, write_jsonl


@pytest.fixture
def cli(capsys):
    return make_runner(capsys)


def _problem(q: str, solution: str, ans: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": solution}], "answer": ans}


def _swift_sample_row(problem: dict, sample: str) -> dict:
    """A row as `swift sample` writes it: the reference overwritten, extra columns dropped, id = MD5 of the input."""
    uid = hashlib.md5(json.dumps({"messages": problem["messages"]}, sort_keys=True).encode()).hexdigest()
    return {
        "messages": problem["messages"][:-1] + [{"role": "assistant", "content": sample}],
        "dataset": "x",
        "id": uid,
    }


# ------------------------------------------------------------------------------------------ pass@k


def _pass_at_k_by_enumeration(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (c correct) that hold at least one correct sample."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(
    "n,c,k", [(8, 0, 8), (8, 1, 8), (8, 8, 8), (10, 3, 8), (10, 1, 1), (12, 4, 5), (16, 15, 8), (5, 2, 3)]
)
def test_pass_at_k_equals_enumeration(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(_pass_at_k_by_enumeration(n, c, k), abs=1e-12)


def test_pass_at_k_n_equals_k_is_any_correct():
    assert pass_at_k(8, 0, 8) == 0.0
    assert all(pass_at_k(8, c, 8) == 1.0 for c in range(1, 9))


@pytest.mark.parametrize(
    "n,c,k,message",
    [(8, 9, 8, "c must be in [0, n=8], got 9"), (4, 1, 8, "k must be in [1, n=4]"), (8, 1, 0, "k must be in [1, n=8]")],
)
def test_pass_at_k_refuses_bad_counts(n, c, k, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        pass_at_k(n, c, k)


# ------------------------------------------------------------------------------------ stats --k


def _labelled(tmp_path, counts: dict[str, tuple[int, int]]):
    """counts: prompt -> (n samples, c correct); rewards +1.0 / -0.2."""
    rows = []
    for q, (n, c) in counts.items():
        rows += [{"prompt": q, "response": "r", "reward": 1.0 if i < c else -0.2} for i in range(n)]
    return write_jsonl(tmp_path / "labelled.jsonl", rows)


def test_stats_k_json_hand_math(tmp_path, cli):
    # three problems: 2/8, 0/8, 8/8 correct -> mean@8 = (0.25 + 0 + 1) / 3; pass@8 = 2/3
    path = _labelled(tmp_path, {"a": (8, 2), "b": (8, 0), "c": (8, 8)})
    res = cli("stats", path, "--k", "8", "--json")
    assert res.code == 0, res.err
    s = res.json()
    assert s["k"] == 8
    assert s["mean_at_k"] == pytest.approx(1.25 / 3)
    assert s["pass_at_k"] == pytest.approx(2 / 3)
    assert s["problems"] == 3 and s["responses"] == 24  # stats' own figures are kept


def test_stats_k_unbiased_when_n_exceeds_k(tmp_path, cli):
    path = _labelled(tmp_path, {"a": (10, 1), "b": (10, 3)})
    s = cli("stats", path, "--k", "8", "--json").json()
    assert s["pass_at_k"] == pytest.approx((1 - comb(9, 8) / comb(10, 8) + 1 - comb(7, 8) / comb(10, 8)) / 2)
    assert s["mean_at_k"] == pytest.approx((0.1 + 0.3) / 2)


def test_stats_k_text(tmp_path, cli):
    path = _labelled(tmp_path, {"a": (8, 2), "b": (8, 0)})
    res = cli("stats", path, "--k", "8")
    assert res.code == 0, res.err
    assert "mean@8  12.5%   pass@8  50.0%" in res.out
    assert "Table 1" in res.out


def test_stats_without_k_has_no_at_k(tmp_path, cli):
    s = cli("stats", _labelled(tmp_path, {"a": (8, 2)}), "--json").json()
    assert "mean_at_k" not in s and "pass_at_k" not in s


def test_stats_k_refuses_too_few_samples(tmp_path, cli):
    path = _labelled(tmp_path, {"a": (8, 2), "b": (4, 1)})
    res = cli("stats", path, "--k", "8")
    assert res.code == 1
    assert "labelled.jsonl:9: prompt 'b' must have at least k=8 samples for pass@8, got 4" in res.err


def test_stats_k_refuses_bad_k(tmp_path, cli):
    res = cli("stats", _labelled(tmp_path, {"a": (8, 2)}), "--k", "0")
    assert res.code == 1 and "k must be an integer >= 1, got 0" in res.err


def test_stats_k_refuses_stdin(tmp_path):
    res = run_command("stats", "-", "--k", "8", input=_labelled(tmp_path, {"a": (8, 2)}).read_text())
    assert res.returncode == 1 and "input must be a file for --k (it is read twice), got '-' (stdin)" in res.stderr


# ------------------------------------------------------------------------------------------- join


def test_join_then_label_through_the_real_commands(tmp_path):
    problems = [
        _problem("Ann has 2 pens and buys 3. How many?", "2 + 3 = 5. The answer is 5.", "5"),
        _problem("Ben has 4 cards and loses 1. How many?", "4 - 1 = 3. The answer is 3.", "3"),
    ]
    write_jsonl(tmp_path / "problems.jsonl", problems)
    samples = [
        _swift_sample_row(problems[1], "4 - 1 = 3. The answer is 3."),
        _swift_sample_row(problems[0], "The answer is 6."),
        _swift_sample_row(problems[0], "2 + 3 = 5. The answer is 5."),
    ]
    write_jsonl(tmp_path / "samples.jsonl", samples)
    res = run_command(
        "join", tmp_path / "samples.jsonl", "--problems", tmp_path / "problems.jsonl", "-o", tmp_path / "joined.jsonl"
    )
    assert res.returncode == 0, res.stderr
    assert "join: 3 samples given the answers of 2 of 2 problems" in res.stdout
    joined = read_jsonl(tmp_path / "joined.jsonl")
    assert [r["answer"] for r in joined] == ["3", "5", "5"]
    assert [r["id"] for r in joined] == [s["id"] for s in samples]  # other fields kept, order kept
    res = run_command("label", tmp_path / "joined.jsonl", "-o", tmp_path / "labelled.jsonl")
    assert res.returncode == 0, res.stderr
    assert [r["reward"] for r in read_jsonl(tmp_path / "labelled.jsonl")] == [1.0, -0.2, 1.0]


def test_join_prompt_response_problems(tmp_path, cli):
    write_jsonl(tmp_path / "problems.jsonl", [{"prompt": "2 + 2?", "answer": 4}])
    write_jsonl(
        tmp_path / "samples.jsonl",
        [{"messages": [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}]}],
    )
    res = cli(
        "join", tmp_path / "samples.jsonl", "--problems", tmp_path / "problems.jsonl", "-o", tmp_path / "out.jsonl"
    )
    assert res.code == 0, res.err
    assert read_jsonl(tmp_path / "out.jsonl")[0]["answer"] == "4"


def test_join_refuses_a_sample_of_no_problem(tmp_path, cli):
    write_jsonl(tmp_path / "problems.jsonl", [_problem("q1", "s", "1")])
    write_jsonl(
        tmp_path / "samples.jsonl",
        [_swift_sample_row(_problem("q1", "s", "1"), "a"), _swift_sample_row(_problem("q2", "s", "2"), "b")],
    )
    res = cli(
        "join", tmp_path / "samples.jsonl", "--problems", tmp_path / "problems.jsonl", "-o", tmp_path / "out.jsonl"
    )
    assert res.code == 1
    assert "samples.jsonl:2: the sample's prompt must match a problem of" in res.err and "'q2'" in res.err
    assert not (tmp_path / "out.jsonl").exists()


def test_join_refuses_two_answers_for_one_prompt(tmp_path, cli):
    write_jsonl(tmp_path / "problems.jsonl", [_problem("q1", "s", "1"), _problem("q1", "t", "2")])
    write_jsonl(tmp_path / "samples.jsonl", [_swift_sample_row(_problem("q1", "s", "1"), "a")])
    res = cli(
        "join", tmp_path / "samples.jsonl", "--problems", tmp_path / "problems.jsonl", "-o", tmp_path / "out.jsonl"
    )
    assert res.code == 1
    assert "problems.jsonl:2: the prompt of line 1 must have one answer, got '1' there and '2' here" in res.err


def test_join_refuses_missing_answer(tmp_path, cli):
    write_jsonl(tmp_path / "problems.jsonl", [{"messages": [{"role": "user", "content": "q"}]}])
    write_jsonl(tmp_path / "samples.jsonl", [_swift_sample_row(_problem("q", "s", "1"), "a")])
    res = cli(
        "join", tmp_path / "samples.jsonl", "--problems", tmp_path / "problems.jsonl", "-o", tmp_path / "out.jsonl"
    )
    assert res.code == 1 and "problems.jsonl:1: missing field 'answer'" in res.err
