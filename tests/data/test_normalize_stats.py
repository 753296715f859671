"""`rift-losses normalize` against the core's normalize_rewards, and `stats` against hand counts."""

from __future__ import annotations

import random

import pytest
import torch

import rift_losses
from rift_losses.data import normalize, stats

from datahelpers import read_jsonl, write_jsonl


def _buffer(seed: int = 0, groups: int = 13):
    """Groups of 1-9 responses, rewards from the paper's schemes, some groups all equal."""
    rng = random.Random(seed)
    rows = []
    for g in range(groups):
        size = rng.randint(1, 9)
        kind = g % 4
        for i in range(size):
            if kind == 0:
                r = 1.0  # all correct: a flat group
            elif kind == 1:
                r = -0.2  # all wrong: a flat group
            elif kind == 2:
                r = rng.choice([1.0, -0.2])
            else:
                r = round(rng.uniform(-1, 1), 3)  # a reward model's scores
            rows.append({"prompt": f"problem {g}", "response": f"sample {i}", "reward": r})
    return rows


@pytest.mark.parametrize("method", list(rift_losses.NORMALIZATIONS))
@pytest.mark.parametrize("batch_rows", [1, 5, 4096])
def test_normalize_equals_the_core_over_the_whole_file(tmp_path, method, batch_rows):
    rows = _buffer()
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    summary = normalize(src, tmp_path / "out.jsonl", method=method, batch_rows=batch_rows, progress="none")
    out = read_jsonl(tmp_path / "out.jsonl")
    # the core on every reward at once, groups given by the prompt
    expected = rift_losses.normalize_rewards(
        torch.tensor([r["reward"] for r in rows], dtype=torch.float64), [r["prompt"] for r in rows], method=method
    ).tolist()
    assert [r["reward"] for r in out] == pytest.approx(expected, abs=1e-12)
    assert [r["raw_reward"] for r in out] == [r["reward"] for r in rows]  # the reward before is kept
    assert [{k: r[k] for k in ("prompt", "response")} for r in out] == [
        {k: r[k] for k in ("prompt", "response")} for r in rows
    ]
    assert summary["rows"] == len(rows) and summary["groups"] == 13
    flat = sum(len({r["reward"] for r in rows if r["prompt"] == f"problem {g}"}) == 1 for g in range(13))
    assert summary["flat_groups"] == flat


def test_normalize_by_group_field_gaussian_by_hand(tmp_path, run):
    """eq. 6 by hand: rewards (1, 1, -0.2, -0.2) have mean 0.4 and std 0.6, so r_hat = +-1."""
    rows = [
        {
            "messages": [{"role": "user", "content": "same prompt"}, {"role": "assistant", "content": str(i)}],
            "pid": i // 4,
            "reward": r,
        }
        for i, r in enumerate([1.0, 1.0, -0.2, -0.2, 1.0, 1.0, 1.0, -0.2])
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    res = run("normalize", src, "-o", tmp_path / "out.jsonl", "--method", "gaussian", "--group-field", "pid", "--json")
    assert res.code == 0, res.err
    got = [r["reward"] for r in read_jsonl(tmp_path / "out.jsonl")]
    # group 1: (1, 1, 1, -0.2): mean 0.7, std 0.3 * sqrt(3) = 0.5196...; (1 - 0.7) / 0.5196 = 0.5774
    s3 = 0.3 * 3**0.5
    assert got == pytest.approx([1, 1, -1, -1, 0.3 / s3, 0.3 / s3, 0.3 / s3, -0.9 / s3], abs=1e-9)
    assert res.json()["groups"] == 2 and res.json()["grouped_by"] == "field 'pid'"


def test_normalize_refuses_a_group_split_across_the_file(tmp_path, run):
    rows = [{"prompt": p, "response": "x", "reward": 1.0} for p in ("a", "a", "b", "a")]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    res = run("normalize", src, "-o", tmp_path / "out.jsonl", "--method", "gpg_mean")
    assert res.code == 1
    assert f"{src}:4: the rows of group prompt 'a' are not next to each other (the group ran until line 2)" in res.err
    assert "sort the file by the prompt first" in res.err
    assert not (tmp_path / "out.jsonl").exists()


def test_normalize_twice_is_refused(tmp_path, run):
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a", "response": "x", "reward": 1.0}])
    assert run("normalize", src, "-o", tmp_path / "n1.jsonl", "--method", "gaussian").code == 0
    res = run("normalize", tmp_path / "n1.jsonl", "-o", tmp_path / "n2.jsonl", "--method", "gaussian")
    assert res.code == 1 and f"{tmp_path / 'n1.jsonl'}:1: field 'raw_reward' is already there" in res.err


def test_normalize_unknown_method_lists_the_core_registry(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a", "response": "x", "reward": 1.0}])
    with pytest.raises(ValueError, match="method must be one of 'gaussian', 'gpg_mean', 'gpg_scaled'"):
        normalize(src, tmp_path / "out.jsonl", method="zscore", progress="none")


# ------------------------------------------------------------------------------------ stats

# Counted by hand (Table 1 and Table 4 of the paper, on 5 problems, 15 responses):
#   P1: +1 +1 -0.2       mixed              P2: -0.2 -0.2 -0.2 -0.2   none positive
#   P3: +1 +1 +1 +1      all positive       P4: +1 -0.2 (rows scattered through the file)  mixed
#   P5: 0.0 +1           not mixed (0 is neither), has a positive, not all positive
HAND = [
    ("P1", 1.0),
    ("P1", 1.0),
    ("P2", -0.2),
    ("P4", 1.0),
    ("P1", -0.2),
    ("P2", -0.2),
    ("P3", 1.0),
    ("P3", 1.0),
    ("P2", -0.2),
    ("P3", 1.0),
    ("P2", -0.2),
    ("P5", 0.0),
    ("P3", 1.0),
    ("P5", 1.0),
    ("P4", -0.2),
]


def test_stats_against_a_buffer_counted_by_hand(tmp_path, run):
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"prompt": p, "response": f"r{i}", "reward": r} for i, (p, r) in enumerate(HAND)]
    )
    res = run("stats", src, "--json")
    assert res.code == 0, res.err
    s = res.json()
    assert (s["problems"], s["responses"], s["positive"], s["negative"], s["zero"]) == (5, 15, 8, 6, 1)
    assert s["positive_pct"] == 53.3  # 8 / 15
    assert (s["mixed"], s["mixed_pct"]) == (2, 40.0)  # P1, P4 of 5
    assert (s["all_positive"], s["none_positive"]) == (1, 1)  # P3; P2
    assert (s["per_problem_min"], s["per_problem_max"]) == (2, 4)
    text = run("stats", src).out  # the tables a person reads
    assert "15        8        6    53.3%" in text and "5                2    40.0%" in text
    assert "zero rewards (neither positive nor negative): 1 response\n" in text


def test_stats_by_group_field_and_the_papers_numbers(tmp_path):
    """A buffer shaped like the paper's MATH / Qwen-2.5-Math-1.5B row: 8 responses per problem."""
    rows, pos = [], 0
    for g in range(40):
        k = (g * 3) % 9  # correct responses in this problem: 0..8
        rows += [{"id": g, "prompt": "same", "response": str(i), "reward": 1.0 if i < k else -0.2} for i in range(8)]
        pos += k
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    s = stats(src, progress="none")  # "id" is not the default group field: grouped by the (identical) prompt
    assert s["problems"] == 1
    from rift_losses.data._rows import Fields

    s = stats(src, fields=Fields(group="id", group_given=True), progress="none")
    mixed = sum(0 < (g * 3) % 9 < 8 for g in range(40))
    assert (s["problems"], s["responses"], s["positive"], s["mixed"]) == (40, 320, pos, mixed)
    assert s["mixed_pct"] == round(100 * mixed / 40, 1) and s["grouped_by"] == "field 'id'"


# Issue 9, case 9 (the data command's side): a buffer whose rewards are all 0 (after normalization)
# trains nothing; every command that sees one says so loudly on stderr, through the real command.


def _warning(command: str, what: str, where, rows: int) -> str:
    return (
        f"rift-losses {command}: WARNING: {what} in {where} ({rows} rows): a RIFT loss on it is 0 with a zero "
        "gradient, "
        "so training on it learns nothing"
    )


def test_all_zero_rewards_warn_loudly(tmp_path):
    from datahelpers import run_command

    zero = write_jsonl(
        tmp_path / "zero.jsonl", [{"prompt": f"q{i // 2}", "response": str(i), "reward": 0} for i in range(4)]
    )
    proc = run_command("stats", zero)
    assert proc.returncode == 0 and proc.stderr.strip() == _warning("stats", "every reward is 0", zero, 4)
    proc = run_command("convert", zero, "-o", tmp_path / "c.jsonl", "--to", "swift", "--json")
    assert proc.returncode == 0 and proc.stderr.strip() == _warning("convert", "every reward is 0", zero, 4)
    # every group degenerate: one row, or all rewards equal -> all 0 after gaussian / gpg_mean
    flat = write_jsonl(
        tmp_path / "flat.jsonl",
        [{"prompt": "a", "response": "1", "reward": 1.0}]
        + [{"prompt": "b", "response": str(i), "reward": -0.2} for i in range(3)],
    )
    for method in ("gaussian", "gpg_mean"):
        out = tmp_path / f"{method}.jsonl"
        proc = run_command("normalize", flat, "-o", out, "--method", method)
        assert proc.returncode == 0, proc.stderr
        assert all(r["reward"] == 0 for r in read_jsonl(out))
        assert proc.stderr.strip() == _warning(
            "normalize",
            f"every reward is 0 after {method} normalization (2 of 2 groups with all-equal rewards)",
            out,
            4,
        )
        assert "  2 groups have all-equal rewards (no relative signal)" in proc.stdout
    # label with --negative 0 and no correct response
    rollouts = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "q", "response": "The answer is 4.", "answer": "5"}])
    proc = run_command("label", rollouts, "-o", tmp_path / "l.jsonl", "--negative", "0")
    assert proc.returncode == 0 and proc.stderr.strip() == _warning(
        "label", "every reward written is 0 (no response is correct and --negative is 0)", tmp_path / "l.jsonl", 1
    ).replace("(1 rows)", "(1 row)")


def test_no_warning_when_some_reward_is_not_zero(tmp_path):
    from datahelpers import run_command

    src = write_jsonl(
        tmp_path / "in.jsonl",
        [{"prompt": "a", "response": "1", "reward": 1.0}, {"prompt": "a", "response": "2", "reward": 0.0}],
    )
    assert run_command("stats", src).stderr == ""
    assert run_command("normalize", src, "-o", tmp_path / "n.jsonl", "--method", "gaussian").stderr == ""
    # gpg_scaled keeps a flat group's positive rewards: no warning there either
    flat = write_jsonl(tmp_path / "flat.jsonl", [{"prompt": "a", "response": str(i), "reward": 1.0} for i in range(2)])
    proc = run_command("normalize", flat, "-o", tmp_path / "s.jsonl", "--method", "gpg_scaled")
    assert proc.returncode == 0 and proc.stderr == ""
