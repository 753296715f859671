"""`rift-losses label` on a table of MATH- and GSM8K-style references: each verdict written by hand.

A reference is compared whole (an interval, a tuple, a set is never its last number), a word
reference as text, and one that is neither is unlabelled (no reward). The table goes through the
real command in one run (a command start costs seconds); the rewards written and the summary
must give each pair its hand-written verdict.
"""

from __future__ import annotations

import json

from datahelpers import read_jsonl, run_command, write_jsonl

# (reference answer, sampled response, the verdict a person gives it)
TABLE = [
    # intervals, tuples, lists and sets written in plain text (MATH): compared whole, never as their last number
    ("(1, 3]", r"The solution set is $\boxed{(1, 3]}$.", "correct"),
    ("(1, 3]", r"\boxed{3}", "wrong"),
    ("(1, 3]", r"\boxed{[1, 3]}", "wrong"),
    ("(1, 2)", r"The point is $\boxed{(1, 2)}$.", "correct"),
    ("(1, 2)", r"\boxed{2}", "wrong"),
    ("1, 2", r"The roots are \boxed{1, 2}.", "correct"),
    ("1, 2", r"\boxed{2, 1}", "correct"),
    ("1, 2", r"\boxed{2}", "wrong"),
    ("(-\\infty, 2)", r"\boxed{(-\infty, 2)}", "correct"),
    ("[0, 1)", r"\boxed{[0,1)}", "correct"),
    ("(3, -2)", r"\boxed{(3,-2)}", "correct"),
    ("(3, -2)", r"\boxed{-2}", "wrong"),
    ("\\{1, 2, 3\\}", r"\boxed{\{3, 2, 1\}}", "correct"),
    # text answers: compared as text, case and spaces normalized
    ("Monday", "The answer is Monday.", "correct"),
    ("Monday", r"\boxed{\text{Monday}}", "correct"),
    ("Monday", r"\boxed{Dynamo}", "wrong"),
    ("Monday", r"\boxed{Tuesday}", "wrong"),
    ("yes", "Yes", "correct"),
    ("yes", r"\boxed{no}", "wrong"),
    ("hello world", r"\boxed{Hello   World}", "correct"),
    ("\\text{Devon}", r"The answer is $\boxed{\text{Devon}}$", "correct"),
    ("\\text{odd}", r"\boxed{\text{even}}", "wrong"),
    ("Route 66", r"\boxed{\text{Route 66}}", "correct"),
    # units
    ("18 dollars", r"So she pays \boxed{18}.", "correct"),
    ("5\\text{ cm}", r"\boxed{5}", "correct"),
    ("10 meters", "The answer is 12.", "wrong"),
    # percentages
    ("50%", r"\boxed{50\%}", "correct"),
    ("25\\%", r"\boxed{25\%}", "correct"),
    ("50%", r"\boxed{40\%}", "wrong"),
    # money
    ("\\$18", "The answer is 18.", "correct"),
    ("$5.00", r"\boxed{5}", "correct"),
    ("\\$1,000.50", r"\boxed{1000.50}", "correct"),
    # fractions
    ("\\frac{1}{2}", "The answer is 0.5.", "correct"),
    ("3/4", r"\boxed{\frac{3}{4}}", "correct"),
    ("3/4", r"\boxed{\frac{4}{3}}", "wrong"),
    ("\\dfrac{7}{2}", r"\boxed{3.5}", "correct"),
    # degrees
    ("90^\\circ", r"\boxed{90}", "correct"),
    ("90^\\circ", r"\boxed{90^\circ}", "correct"),
    ("45", r"\boxed{45^\circ}", "correct"),
    # negative numbers
    ("-5", r"\boxed{-5}", "correct"),
    ("-5", r"\boxed{5}", "wrong"),
    ("-3/2", r"\boxed{-\frac{3}{2}}", "correct"),
    # thousands separators (GSM8K)
    ("1,000", r"\boxed{1000}", "correct"),
    ("12,345", "The answer is 12345.", "correct"),
    ("1000", r"\boxed{1,000}", "correct"),
    ("1,000", r"\boxed{100}", "wrong"),
    # GSM8K-style integers
    ("72", "48 + 24 = 72, so the answer is 72.", "correct"),
    ("72", "The answer is 70.", "wrong"),
    ("72", "I cannot solve this.", "no_answer"),
    # algebra
    ("x^2+1", r"\boxed{1 + x^2}", "correct"),
    ("2xy", r"\boxed{2yx}", "correct"),
    ("2xy", r"\boxed{2}", "wrong"),
    ("\\sqrt{2}", r"\boxed{\sqrt 2}", "correct"),
    ("2\\sqrt{3}", r"\boxed{\sqrt{12}}", "correct"),
    ("pi", r"\boxed{\pi}", "correct"),
    # multiple choice
    ("\\text{(C)}", r"\boxed{C}", "correct"),
    ("C", r"The answer is \boxed{D}", "wrong"),
    # several numbers with a word between them
    ("3 and 5", r"\boxed{3, 5}", "correct"),
    # neither math nor text: unlabelled, never a verdict
    ("\\frac{a}{", r"\boxed{1}", "unlabelled"),
    ("???", "The answer is 3.", "unlabelled"),
]

REWARD = {"correct": 1.0, "wrong": -0.2, "no_answer": -0.2}


def test_the_table_has_every_answer_style():
    assert len(TABLE) >= 50
    assert {verdict for _, _, verdict in TABLE} == {"correct", "wrong", "no_answer", "unlabelled"}


def test_label_gives_every_pair_of_the_table_its_hand_written_verdict(tmp_path):
    rows = [{"prompt": f"q{i}", "response": response, "answer": ref} for i, (ref, response, _) in enumerate(TABLE)]
    src = write_jsonl(tmp_path / "table.jsonl", rows)
    proc = run_command("label", src, "-o", tmp_path / "out.jsonl", "--json", "--audit")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    written = {row["prompt"]: row["reward"] for row in read_jsonl(tmp_path / "out.jsonl")}
    # per line: the reward written (None: not written) and whether it is listed as unlabelled / no answer
    got = [
        (written.get(f"q{i}"), i + 1 in summary["unlabelled_lines"], i + 1 in summary["no_answer_lines"])
        for i in range(len(TABLE))
    ]
    want = [(REWARD.get(v), v == "unlabelled", v == "no_answer") for *_, v in TABLE]
    assert got == want
    counts = {v: sum(1 for *_, verdict in TABLE if verdict == v) for v in ("correct", "no_answer", "unlabelled")}
    assert (summary["correct"], summary["no_answer"], summary["unlabelled"]) == (
        counts["correct"],
        counts["no_answer"],
        counts["unlabelled"],
    )
    # the audit says how each reference was read
    readings = {item["reference"]: item["reading"] for item in summary["audit"]}
    assert readings["(1, 3]"] == readings["1, 2"] == readings["18 dollars"] == "math"
    assert readings["Monday"] == readings["yes"] == readings["\\text{Devon}"] == "text"
    assert readings["???"] == readings["\\frac{a}{"] == "unlabelled"
    assert sum(summary["readings"].values()) == summary["rows"]
