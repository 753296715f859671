"""`rift-losses label`: math-verify's verdicts on hand-worked cases, and the rewards written."""

from __future__ import annotations

import json

import pytest

from rift_losses.data._grade import grade

from datahelpers import read_jsonl, run_command, run_subprocess, write_jsonl

# (reference answer, sampled response, verdict a person gives it)
HAND_WORKED = [
    # LaTeX against decimals, both ways
    ("0.5", "Half of one is $\\frac{1}{2}$.", "correct"),
    ("\\frac{1}{2}", "One of two equal parts is 0.5 of the whole. The answer is 0.5.", "correct"),
    ("\\frac{1}{2}", "The fraction is $\\frac{2}{4}$.", "correct"),  # equal value, not simplified
    ("\\frac{1}{2}", "The fraction is $\\frac{1}{3}$.", "wrong"),
    ("3/4", "So Sam ate 0.75 of it.", "correct"),
    # boxed answers: the boxed value is the final answer, not the last number in the text
    ("72", "48 / 2 = 24 and 48 + 24 = 72, so the final answer is \\boxed{72}.", "correct"),
    ("72", "The answer is \\boxed{70}.", "wrong"),
    ("\\frac{1}{4}", "It simplifies to $\\boxed{\\frac{1}{4}}$.", "correct"),
    ("10", "\\boxed{10} dollars, since 12 * 50 / 60 = 10.", "correct"),
    # plain "the answer is" and number formats
    ("90", "In May she sold 30, so 60 + 30 = 90. The answer is 90.", "correct"),
    ("90", "In May she sold 30. The answer is 30.", "wrong"),
    ("1,000", "The answer is 1000.", "correct"),
    ("10", "She earned $10.", "correct"),
    # no extractable answer: counts as wrong, reported separately
    ("72", "I am not sure how to solve this.", "no_answer"),
    ("72", "", "no_answer"),
    ("72", "The answer is \\boxed{}.", "no_answer"),
]


@pytest.mark.parametrize("reference,response,verdict", HAND_WORKED)
def test_grade_hand_worked(reference, response, verdict):
    assert grade(reference, response) == verdict


def test_unparsable_reference_is_an_error_not_a_verdict():
    with pytest.raises(ValueError, match="cannot read it whole, and it is not plain text"):
        grade("???", "The answer is 3.")


def test_label_writes_the_papers_rewards_and_reports_no_answer_lines(tmp_path, run):
    rows = [
        {"id": i, "prompt": "What is half of one?", "response": r, "answer": a}
        for i, (a, r, _) in enumerate(HAND_WORKED)
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    res = run("label", src, "-o", tmp_path / "out.jsonl", "--json")
    assert res.code == 0, res.err
    out = read_jsonl(tmp_path / "out.jsonl")
    expected = [1.0 if v == "correct" else -0.2 for _, _, v in HAND_WORKED]
    assert [r["reward"] for r in out] == expected  # exactly the paper's +1.0 / -0.2 (Python floats, not float32)
    assert [{k: v for k, v in r.items() if k != "reward"} for r in out] == rows  # every field kept, in order
    s = res.json()
    no_answer_lines = [i + 1 for i, (_, _, v) in enumerate(HAND_WORKED) if v == "no_answer"]
    assert (s["rows"], s["correct"], s["wrong"], s["no_answer"]) == (
        len(rows),
        expected.count(1.0),
        expected.count(-0.2),
        len(no_answer_lines),
    )
    assert s["no_answer_lines"] == no_answer_lines
    # the human summary says it too, never silently
    res = run("label", src, "-o", tmp_path / "out2.jsonl")
    assert (
        f"{len(no_answer_lines)} with no extractable answer, counted wrong: lines "
        f"{', '.join(map(str, no_answer_lines))}" in res.out
    )


def test_label_chat_rows_custom_fields_and_rewards(tmp_path, run):
    rows = [
        {
            "conv": [
                {"role": "system", "content": "Solve."},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "\\boxed{4}"},
            ],
            "gold": 4,
        },
        {
            "conv": [
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "2 + 2 = 5. The answer is 5."},
            ],
            "gold": 4,
            "score": 9,
        },
        {"question": "2+3?", "completion": "2 + 3 = 5", "gold": "5"},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    res = run(
        "label",
        src,
        "-o",
        tmp_path / "out.jsonl",
        "--messages-field",
        "conv",
        "--prompt-field",
        "question",
        "--response-field",
        "completion",
        "--answer-field",
        "gold",
        "--reward-field",
        "score",
        "--positive",
        "1",
        "--negative",
        "-0.5",
        "--json",
    )
    assert res.code == 0, res.err
    assert [r["score"] for r in read_jsonl(tmp_path / "out.jsonl")] == [1.0, -0.5, 1.0]
    assert res.json()["replaced_rewards"] == 1  # the old "score": 9 of row 2 was replaced, and counted
    assert (
        "replaced an existing reward on 1 row\n"
        in run(
            "label",
            src,
            "-o",
            tmp_path / "o2.jsonl",
            "--messages-field",
            "conv",
            "--prompt-field",
            "question",
            "--response-field",
            "completion",
            "--answer-field",
            "gold",
            "--reward-field",
            "score",
        ).out
    )


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--positive", "0", "positive must be a finite number > 0, got 0.0"),
        ("--negative", "0.3", "negative must be a finite number <= 0, got 0.3"),
        ("--positive", "nan", "positive must be a finite number > 0, got nan"),
        ("--jobs", "0", "jobs must be an integer >= 1, got 0"),
    ],
)
def test_label_bad_options(tmp_path, run, flag, value, message):
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "response": "1", "answer": "1"}])
    res = run("label", src, "-o", tmp_path / "out.jsonl", flag, value)
    assert res.code == 1 and message in res.err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.slow
def test_label_jobs_gives_the_same_file(tmp_path, run):
    """Grading in 2 worker processes writes exactly what 1 process writes (order kept)."""
    rows = [{"prompt": f"q{i // 3}", "response": r, "answer": a} for i, (a, r, _) in enumerate(HAND_WORKED * 3)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    assert run("label", src, "-o", tmp_path / "one.jsonl").code == 0
    # the real command (python -m rift_losses.data): spawned workers re-import its __main__ safely
    proc = run_subprocess("label", src, "-o", tmp_path / "two.jsonl", "--jobs", "2", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "two.jsonl").read_bytes()


def test_label_demo_buffer_matches_its_generator(tmp_path, run):
    """The shipped buffer: math-verify's verdicts equal the generator's intent, problem by problem."""
    from datahelpers import REPO

    res = run("label", REPO / "demo" / "rollouts.jsonl", "-o", tmp_path / "labelled.jsonl", "--json")
    assert res.code == 0, res.err
    rows = read_jsonl(tmp_path / "labelled.jsonl")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_rollouts", REPO / "demo" / "make_rollouts.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    generated = gen.rollouts()
    assert [{k: r[k] for k in ("prompt", "response", "answer")} for r in rows] == generated  # shipped file is current
    by_prompt: dict = {}
    for r in rows:
        by_prompt.setdefault(r["prompt"], []).append(r["reward"] > 0)
    assert [sum(v) for v in by_prompt.values()] == list(gen.N_CORRECT)
    truncated = [r for r in rows if not r["response"].rstrip().endswith((".", "}", "$"))]  # cut-off samples
    assert truncated and all(r["reward"] == -0.2 for r in truncated)
    # math-verify falls back to the last number of a cut-off response ("= 0.3 per minute. Let me"):
    # those are graded wrong; the ones without any number have no extractable answer.
    no_digits = sum(not any(c.isdigit() for c in r["response"]) for r in truncated)
    assert no_digits > 0 and json.loads(res.out)["no_answer"] == no_digits


def test_math_verify_is_imported_only_when_labelling(tmp_path):
    """`import rift_losses` never loads the data tool; the data tool loads math-verify only in `label`."""
    import subprocess
    import sys

    code = (
        "import sys, rift_losses; assert 'rift_losses.data' not in sys.modules\n"
        "import rift_losses.data.cli as cli\n"
        "cli.main(['stats', sys.argv[1], '--progress', 'none'])\n"
        "assert 'math_verify' not in sys.modules and 'sympy' not in sys.modules, 'stats imported math-verify'\n"
    )
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [{"prompt": "2+3?", "response": "5", "reward": 1.0}, {"prompt": "2+3?", "response": "6", "reward": -0.2}],
    )
    proc = subprocess.run([sys.executable, "-c", code, str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "2 responses to 1 problem (2 per problem" in proc.stdout


# Issue 9, case 6: MATH-style references as math-verify's README prescribes for gold answers.
# (reference, a response that is right, a response that is wrong)
REFERENCES = [
    ("\\$18", "She earns 2 * 9 = 18 dollars. The answer is 18.", "The answer is 16."),
    ("$\\$18$", "The answer is $18.", "The answer is 81."),
    ("\\$1.50", "It costs $1.50.", "It costs $2.50."),
    ("50\\%", "The answer is 50%.", "The answer is 40%."),
    ("50\\%", "So half of them: $\\boxed{50\\%}$", "So $\\boxed{25\\%}$"),
    ("5\\text{ cm}", "The side is $\\boxed{5 \\text{ cm}}$.", "The side is $\\boxed{6 \\text{ cm}}$."),
    ("18 dollars", "The answer is 18.", "The answer is 19."),
    ("2\\sqrt{3}", "So $\\boxed{2\\sqrt{3}}$.", "So $\\boxed{2}$."),  # read as LaTeX, not as the plain number 2
    ("\\frac{1}{2}", "The answer is 0.5.", "The answer is 0.25."),
    ("x=3", "So x = 3.", "So x = 4."),
]


def test_label_grades_math_style_references_through_the_real_command(tmp_path):
    rows = []
    for i, (ref, right, wrong) in enumerate(REFERENCES):
        rows += [
            {"prompt": f"q{i}", "response": right, "answer": ref},
            {"prompt": f"q{i}", "response": wrong, "answer": ref},
        ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    proc = run_command("label", src, "-o", tmp_path / "out.jsonl", "--json")
    assert proc.returncode == 0, proc.stderr
    got = [(r["answer"], r["response"], r["reward"]) for r in read_jsonl(tmp_path / "out.jsonl")]
    assert got == [(r["answer"], r["response"], 1.0 if i % 2 == 0 else -0.2) for i, r in enumerate(rows)]
    assert json.loads(proc.stdout)["unlabelled"] == 0


def test_an_unparsable_reference_leaves_its_rows_unlabelled(tmp_path):
    """Not a stop: those rows are not graded and not written; the summary counts them and names their lines."""
    rows = [
        {"prompt": "q0", "response": "The answer is 18.", "answer": "\\$18"},
        {"prompt": "q1", "response": "The answer is 3.", "answer": "???"},
        {"prompt": "q1", "response": "The answer is 4.", "answer": "???"},
        {"prompt": "q2", "response": "The answer is 5.", "answer": "5"},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    proc = run_command("label", src, "-o", tmp_path / "out.jsonl")
    assert proc.returncode == 0, proc.stderr
    assert [r["prompt"] for r in read_jsonl(tmp_path / "out.jsonl")] == ["q0", "q2"]
    assert proc.stdout.splitlines()[0] == f"label: 2 responses graded by math-verify -> {tmp_path / 'out.jsonl'}"
    assert (
        "  unlabelled      2   not written: their reference answer cannot be read whole as math or as text (lines 2, "
        "3); --strict makes this an error" in proc.stdout.splitlines()
    )
    s = json.loads(run_command("label", src, "-o", tmp_path / "out.jsonl", "--json").stdout)
    assert (s["rows"], s["correct"], s["unlabelled"], s["unlabelled_lines"]) == (2, 2, 2, [2, 3])
    # --strict: every such row is listed, exit 1, nothing written (an earlier output survives)
    (tmp_path / "strict.jsonl").write_text("old\n")
    proc = run_command("label", src, "-o", tmp_path / "strict.jsonl", "--strict")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"rift-losses label: error: {src}: 2 rows with a reference answer (field 'answer') that cannot be read whole "
        "as math or as text, lines 2, 3; nothing written (--strict)"
    )
    assert (tmp_path / "strict.jsonl").read_text() == "old\n"
