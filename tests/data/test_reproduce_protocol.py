"""`make reproduce`'s protocol and statistics (reproduce/run.py, stats.py, verify.py): pure parts, no host.

The pipeline itself runs in `make test` as its last step (the smoke run), which checks its
results.json against its kept evaluation files with the same :func:`verify.verify` tested here.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys

import pytest

from datahelpers import REPO, write_jsonl

sys.path.insert(0, str(REPO / "reproduce"))
import run  # noqa: E402
import stats  # noqa: E402
import verify  # noqa: E402


def test_protocol_is_fixed_and_meets_the_issue():
    p = run.PROTOCOL
    assert p["epochs"] == 3 and p["lr_scheduler"] == "cosine" and p["warmup_ratio"] == 0.05
    grid = p["lr_grid"]
    assert min(grid) <= 1e-5 and round(max(grid) / min(grid)) >= 30 and p["shared_lr"] in grid
    ratios = [b / a for a, b in zip(grid, grid[1:])]
    assert ratios == pytest.approx([10.0] * len(ratios)) and p["lr_grid_mantissas"] == [1.0]  # one per decade
    assert all(run.next_lr(a, up=True, mantissas=(1.0,)) == pytest.approx(b) for a, b in zip(grid, grid[1:]))
    assert len(p["seeds"]) >= 5 and 1 <= p["lr_edge_max_extensions"] <= 2  # the issue: at most twice
    assert run.FULL["grid_mantissas"] == run.SMOKE["grid_mantissas"] == tuple(p["lr_grid_mantissas"])
    assert p["side_seeds"] and set(p["side_seeds"]) <= set(p["seeds"]) and run.FULL["side_seeds"] == (0,)
    assert run.FULL["grid"] == tuple(grid) and run.FULL["seeds"] == tuple(p["seeds"])
    assert run.FULL["epochs"] == p["epochs"] and run.FULL["batch"] == p["global_batch"]
    assert set(run.METHODS) >= {"sft", "dft", "rft", "dpo", "naive", "rift", "rift_seq", "rift_gaussian"}
    assert run.ARMS["dpo"].command == "dpo" and run.ARMS["dft"].dft and run.ARMS["rft"].loss_type is None
    assert set(run.ROUND2) == {"rft", "rift"} and set(run.AT_FIFTH) == {"rift", "dpo"}
    assert f"s * {run.evaluate.SEED_STRIDE} + c" in p["evaluation_sampling"]  # what evaluate.py does


@pytest.mark.parametrize(
    ("lr", "up", "mantissas", "want"),
    [
        (1e-5, True, (1.0,), 1e-4),
        (1e-6, False, (1.0,), 1e-7),
        (1e-4, True, (1.0,), 1e-3),
        (1e-5, True, (1.0, 3.0), 3e-5),
        (3e-5, True, (1.0, 3.0), 1e-4),
        (3e-4, True, (1.0, 3.0), 1e-3),
        (1e-5, False, (1.0, 3.0), 3e-6),
        (3e-6, False, (1.0, 3.0), 1e-6),
    ],
)
def test_next_lr_walks_the_grid_one_step(lr, up, mantissas, want):
    assert run.next_lr(lr, up=up, mantissas=mantissas) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    ("lr", "mantissas", "match"),
    [
        (2e-5, (1.0, 3.0), "lr must be 1 or 3 times a power of ten, got 2e-05"),
        (3e-5, (1.0,), "lr must be 1 times a power of ten, got 3e-05"),
        (0.0, (1.0,), "lr must be > 0, got 0.0"),
    ],
)
def test_next_lr_refuses_off_grid_values(lr, mantissas, match):
    with pytest.raises(ValueError, match=match):
        run.next_lr(lr, up=True, mantissas=mantissas)


def test_edge_rule_extends_at_an_edge_at_most_the_limit():
    scores = {1e-6: 0.20, 1e-5: 0.18, 1e-4: 0.15}
    one = (1.0,)
    assert run.edge_extension(scores, 0, 2, mantissas=one) == (1e-7, "best val score at the lowest rate tried (1e-06)")
    scores[1e-7] = 0.22
    assert run.edge_extension(scores, 1, 2, mantissas=one)[0] == pytest.approx(1e-8)
    assert run.edge_extension(scores, 1, 1, mantissas=one) is None  # the limit (version 6: one extension)
    scores[1e-8] = 0.25
    assert run.edge_extension(scores, 2, 2, mantissas=one) is None  # the limit
    assert run.edge_extension({1e-6: 0.1, 1e-5: 0.3, 1e-4: 0.2}, 0, 1, mantissas=one) is None  # interior optimum
    assert run.edge_extension({1e-6: 0.1, 1e-5: 0.3}, 0, 1, mantissas=one)[0] == pytest.approx(1e-4)  # highest edge
    assert run.edge_extension({1e-5: 0.2, 3e-5: 0.1}, 0, 2, mantissas=(1.0, 3.0))[0] == pytest.approx(3e-6)  # 1-3
    assert run.choose_lr({1e-5: 0.3, 3e-5: 0.3}) == 1e-5  # ties go to the lower rate


def test_dpo_pairs_prefer_a_correct_sample_and_the_reference_otherwise():
    user = {"role": "user", "content": "2 + 3?"}
    refs = [{"messages": [user, {"role": "assistant", "content": "2 + 3 = 5. The answer is 5."}], "answer": "5"}]
    labelled = [
        {"messages": [user, {"role": "assistant", "content": "The answer is 5."}], "reward": 1.0},
        {"messages": [user, {"role": "assistant", "content": "The answer is 6."}], "reward": -0.2},
    ]
    pairs = run.dpo_pairs(labelled, refs)
    assert pairs == [
        {
            "messages": [user, {"role": "assistant", "content": "The answer is 5."}],
            "rejected_response": "2 + 3 = 5. The answer is 5.",
        },
        {
            "messages": [user, {"role": "assistant", "content": "2 + 3 = 5. The answer is 5."}],
            "rejected_response": "The answer is 6.",
        },
    ]
    other = [{"messages": [{"role": "user", "content": "1 + 1?"}, labelled[0]["messages"][1]], "reward": 1.0}]
    with pytest.raises(ValueError, match="s.jsonl:1: messages must have a prompt of the reference problems"):
        run.dpo_pairs(other, refs, source="s.jsonl")


def test_t_interval_matches_the_textbook_formula():
    values = [0.18, 0.21, 0.19, 0.22, 0.20]
    iv = stats.t_interval(values)
    half = 2.776 * statistics.stdev(values) / math.sqrt(5)
    assert iv["mean"] == pytest.approx(0.20) and iv["ci95"] == pytest.approx([0.20 - half, 0.20 + half])
    assert stats.t_interval([0.3])["ci95"] == [None, None]
    with pytest.raises(ValueError, match="values must hold at least one number"):
        stats.t_interval([])


def test_t_table_is_scipys():
    scipy_stats = pytest.importorskip("scipy.stats")  # scipy is in every env; the table must not drift
    for df, t in enumerate(stats.T975, 1):
        assert t == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=6e-4)


def test_paired_by_seed_separates_a_constant_shift_and_not_noise():
    a = [0.20, 0.25, 0.18, 0.30, 0.22]
    shifted = stats.paired_by_seed([x + 0.02 for x in a], a)
    assert shifted["mean"] == pytest.approx(0.02) and shifted["distinguishable_from_zero"] is True
    noise = stats.paired_by_seed([0.21, 0.24, 0.19, 0.29, 0.23], a)
    assert noise["distinguishable_from_zero"] is False
    assert noise["per_seed"] == pytest.approx([0.01, -0.01, 0.01, -0.01, 0.01])


def test_paired_bootstrap_keeps_the_pairing_by_problem():
    rng = random.Random(1)
    base = [[rng.random() for _ in range(200)] for _ in range(3)]
    better = [[x + 0.05 for x in seed] for seed in base]  # every problem 5 points better
    res = stats.paired_bootstrap(better, base, n_boot=500)
    assert res["mean"] == pytest.approx(0.05) and res["ci95"] == pytest.approx([0.05, 0.05])
    assert res["distinguishable_from_zero"] is True
    same = stats.paired_bootstrap(base, [list(reversed(s)) for s in base], n_boot=500)
    assert same["ci95"][0] < 0 < same["ci95"][1]
    with pytest.raises(ValueError, match="every seed must score the same problems"):
        stats.paired_bootstrap([[0.1, 0.2]], [[0.1]])


def test_validity_gate():
    assert stats.validity_gate([0.22, 0.23, 0.21], [0.18, 0.19, 0.17])["holds"] is True
    assert stats.validity_gate([0.19, 0.23, 0.15], [0.18, 0.19, 0.17])["holds"] is False
    single = stats.validity_gate([0.5], [0.1])
    assert single["holds"] is False and single["assessable"] is False


def _eval_file(path, correct_per_problem, *, k=8):
    rows = []
    for p, c in enumerate(correct_per_problem):
        user = {"role": "user", "content": f"problem {p}?"}
        for i in range(k):
            reply = {"role": "assistant", "content": str(i)}
            rows.append({"messages": [user, reply], "reward": 1.0 if i < c else -0.2})
    return write_jsonl(path, rows)


def test_verify_recomputes_scores_from_the_eval_files(tmp_path):
    # 3 problems with 8, 0 and 2 correct of 8: mean@8 = (1 + 0 + 0.25) / 3, pass@8 = 2 / 3
    f = _eval_file(tmp_path / "rift-s0.jsonl", [8, 0, 2])
    rel = str(f.relative_to(tmp_path))
    entry = {"seed": 0, "mean_at_k": 1.25 / 3, "pass_at_k": 2 / 3, "eval_file": rel}
    results = {
        "k": 8,
        "methods": {"rift": {"mean_at_k": 1.25 / 3, "pass_at_k": 2 / 3, "per_seed": [entry]}},
        "eval_files": {"rift": [rel]},
    }
    assert verify.verify(results, tmp_path) == []
    assert stats.per_problem(f, k=8) == {"mean_at_k": [1.0, 0.0, 0.25], "pass_at_k": [1.0, 0.0, 1.0]}
    entry["mean_at_k"] = 0.5
    bad = verify.verify(json.loads(json.dumps(results)), tmp_path)
    assert any("mean_at_k recomputed from rift-s0.jsonl is 0.41666" in b for b in bad)
    results["eval_files"]["rift"] = ["elsewhere.jsonl"]
    assert any("eval_files.rift must be" in b for b in verify.verify(results, tmp_path))


def test_dpo_pairs_script_writes_swift_preference_rows(tmp_path, capsys):
    import dpo_pairs

    user = {"role": "user", "content": "2 + 3?"}
    ref = {"role": "assistant", "content": "2 + 3 = 5. The answer is 5."}
    write_jsonl(tmp_path / "problems.jsonl", [{"messages": [user, ref], "answer": "5"}])
    wrong = {"role": "assistant", "content": "The answer is 6."}
    write_jsonl(tmp_path / "labelled.jsonl", [{"messages": [user, wrong], "reward": -0.2}])
    args = [str(tmp_path / "labelled.jsonl"), "--problems", str(tmp_path / "problems.jsonl")]
    assert dpo_pairs.main([*args, "-o", str(tmp_path / "pairs.jsonl")]) == 0
    row = json.loads((tmp_path / "pairs.jsonl").read_text())
    assert row == {"messages": [user, ref], "rejected_response": "The answer is 6."}
    write_jsonl(tmp_path / "problems.jsonl", [{"messages": [{"role": "user", "content": "other"}, ref]}])
    with pytest.raises(SystemExit, match="labelled.jsonl:1: messages must have a prompt of the reference problems"):
        dpo_pairs.main([*args, "-o", str(tmp_path / "p2.jsonl")])


def test_the_committed_results_equal_their_committed_evaluation_files(tmp_path):
    """docs/data/reproduce.json (the README's table) against the labelled samples it names, recomputed."""
    import tarfile

    results = json.loads((REPO / "docs" / "data" / "reproduce.json").read_text())
    with tarfile.open(REPO / "docs" / "data" / "reproduce_eval.tar.xz") as tar:
        tar.extractall(tmp_path, filter="data")
    assert verify.verify(results, tmp_path) == []
    named = {f for files in results["eval_files"].values() for f in files}
    assert named and all((tmp_path / f).is_file() for f in named)
    assert run.check_results(results) == []
    results["methods"]["rift"]["per_seed"][0]["pass_at_k"] -= 0.01  # one figure off: caught
    assert any("rift seed 0: pass_at_k" in p for p in verify.verify(results, tmp_path))
    side = results["methods_shared_lr"]["rft"]["per_seed"]
    side.append(dict(side[0]))  # a shared-rate group with more runs than the side seeds: caught
    want = f"methods_shared_lr.rft.per_seed must have {len(results['config']['side_seeds'])} entries, got"
    assert any(want in p for p in run.check_results(results))


def test_samples_whose_grading_timed_out_are_kept_as_wrong(tmp_path, monkeypatch):
    """`rift-losses label` leaves a timed-out sample out; the evaluation puts it back, in its place, as wrong."""
    monkeypatch.setattr(run, "_grading_timed_out", {})
    rows = [
        {
            "messages": [{"role": "user", "content": f"q{i // 2}"}, {"role": "assistant", "content": f"a{i}"}],
            "answer": "1",
        }
        for i in range(6)
    ]
    raw = write_jsonl(tmp_path / "raw.jsonl", rows)
    graded = [dict(r, reward=1.0 if i % 3 == 0 else -0.2) for i, r in enumerate(rows) if i not in (1, 4)]
    labelled = write_jsonl(tmp_path / "m.jsonl", graded)
    run.keep_timed_out(raw, labelled, 2)
    back = [json.loads(line) for line in labelled.read_text().splitlines()]
    assert [r["messages"] for r in back] == [r["messages"] for r in rows]
    assert [r["reward"] for r in back] == [1.0, run.NEGATIVE, -0.2, 1.0, run.NEGATIVE, -0.2]
    assert [r.get("grading") for r in back] == [None, "timed out", None, None, "timed out", None]
    assert list(run._grading_timed_out.values()) == [2]
    write_jsonl(labelled, graded[::-1])  # not in raw's order: refuse rather than guess
    with pytest.raises(SystemExit, match="does not follow"):
        run.keep_timed_out(raw, labelled, 2)
