"""Every bad input stops the command with `file:line`, the field and what was wrong, and writes nothing."""

from __future__ import annotations

import json

import pytest

from datahelpers import write_jsonl

GOOD = json.dumps({"prompt": "What is 2+3?", "response": "The answer is 5.", "answer": "5", "reward": 1.0})


def row(**fields) -> str:
    base = {"prompt": "What is 2+3?", "response": "The answer is 5.", "answer": "5", "reward": 1.0}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


MSG = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]

# (commands, the bad line (line 3: line 1 is good, line 2 blank), the message after "FILE:3: ")
CASES = [
    ("all", '{"prompt": "a",', "invalid JSON: Expecting property name enclosed in double quotes at column 16"),
    (
        "all",
        '{"prompt": "a", "response": "b", "answer": "1", "reward": NaN}',
        "invalid JSON: NaN is not valid JSON (use a finite number or null)",
    ),
    ("all", "[1, 2]", "a row must be a JSON object, got list [1, 2]"),
    ("all", b'{"prompt": "\xff"}', "is not UTF-8 text (invalid start byte at byte 12)"),
    ("all", row(response=...), "missing field 'response' (fields present: 'prompt', 'answer', 'reward')"),
    (
        "all",
        json.dumps({"text": "hi", "reward": 1.0}),
        "missing field 'messages' (chat rows) or 'prompt' and "
        "'response' (prompt/response rows); fields present: 'text', "
        "'reward' (name yours with --messages-field or "
        "--prompt-field/--response-field)",
    ),
    ("all", row(response=3), "field 'response' must be a string, got 3"),
    ("all", row(prompt=None), "field 'prompt' must be a string, got null"),
    (
        "all",
        json.dumps({"messages": "hi", "answer": "4", "reward": 1.0}),
        "field 'messages' must be a non-empty list of messages, got 'hi'",
    ),
    (
        "all",
        json.dumps({"messages": [], "answer": "4", "reward": 1.0}),
        "field 'messages' must be a non-empty list of messages, got []",
    ),
    (
        "all",
        json.dumps({"messages": ["hi", MSG[1]], "answer": "4", "reward": 1.0}),
        "field 'messages'[0] must be an object with 'role' and 'content', got 'hi'",
    ),
    (
        "all",
        json.dumps({"messages": [MSG[0], {"role": "assistant"}], "answer": "4", "reward": 1.0}),
        "field 'messages'[1].content must be a string, got nothing",
    ),
    (
        "all",
        json.dumps({"messages": [MSG[0], {"role": "assistant", "content": ["4"]}], "answer": "4", "reward": 1.0}),
        "field 'messages'[1].content must be a string, got [\"4\"]",
    ),
    (
        "all",
        json.dumps({"messages": [MSG[1], MSG[0]], "answer": "4", "reward": 1.0}),
        "field 'messages' must end with the sampled response, a message with role 'assistant', got role 'user'",
    ),
    (
        "all",
        json.dumps({"messages": [MSG[1]], "answer": "4", "reward": 1.0}),
        "field 'messages' must hold the prompt before the assistant's response, got only the response",
    ),
    ("label", row(answer=...), "missing field 'answer': the reference answer (name yours with --answer-field)"),
    ("label", row(answer=True), "field 'answer' must be a string or a number, got true"),
    ("label", row(answer=["5"]), "field 'answer' must be a string or a number, got [\"5\"]"),
    ("label", row(answer="  "), "field 'answer' must not be empty"),
    (
        "reward",
        row(reward=...),
        "missing field 'reward' (label the buffer first with `rift-losses label`, or name yours with --reward-field)",
    ),
    ("reward", row(reward="1.0"), "field 'reward' must be a finite number, got '1.0'"),
    ("reward", row(reward=True), "field 'reward' must be a finite number, got true"),
    ("reward", row(reward=None), "field 'reward' must be a finite number, got null"),
    (
        "reward",
        '{"prompt": "a", "response": "b", "reward": 1e400}',
        "field 'reward' must be a finite number, got Infinity",
    ),
    (
        "reward",
        row(group="g1"),
        "field 'group' appears here but not on the first row; give it on every row, or on none to group by the prompt",
    ),
]

COMMANDS = {
    "label": ["label", "-o", "{out}"],
    "normalize": ["normalize", "-o", "{out}", "--method", "gaussian"],
    "stats": ["stats"],
    "convert": ["convert", "-o", "{out}", "--to", "llamafactory"],
}
WHICH = {"all": list(COMMANDS), "label": ["label"], "reward": ["normalize", "stats", "convert"]}


@pytest.mark.parametrize("case", range(len(CASES)), ids=[c[2][:40] for c in CASES])
def test_bad_input_names_file_line_and_field(tmp_path, run, case):
    which, bad, message = CASES[case]
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        GOOD.encode() + b"\n\n" + (bad if isinstance(bad, bytes) else bad.encode()) + b"\n" + GOOD.encode() + b"\n"
    )
    for command in WHICH[which]:
        out = tmp_path / f"{command}.out.jsonl"
        out.write_text("old content\n")  # an earlier output must survive a failed run untouched
        args = [a.format(out=out) for a in COMMANDS[command]]
        res = run(args[0], src, *args[1:])
        assert res.code == 1, (command, res.out)
        assert res.err.strip() == f"rift-losses {command}: error: {src}:3: {message}", command
        assert out.read_text() == "old content\n"
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


def test_group_field_missing_on_a_later_row(tmp_path, run):
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [{"prompt": "a", "response": "b", "reward": 1.0, "group": 1}, {"prompt": "a", "response": "b", "reward": 1.0}],
    )
    res = run("stats", src)
    assert (
        res.err.strip()
        == f"rift-losses stats: error: {src}:2: missing field 'group': the rows before have it, and it names each "
        "response's group"
    )


def test_group_value_must_be_a_scalar(tmp_path, run):
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a", "response": "b", "reward": 1.0, "pid": [1]}])
    res = run("stats", src, "--group-field", "pid")
    assert res.err.strip() == f"rift-losses stats: error: {src}:1: field 'pid' must be a string or a number, got [1]"


def test_missing_input_file(tmp_path, run):
    res = run("stats", tmp_path / "nope.jsonl")
    assert (
        res.code == 1
        and res.err.strip()
        == f"rift-losses stats: error: {tmp_path / 'nope.jsonl'}: cannot read: No such file or directory"
    )


def test_bad_dataset_info_is_not_overwritten(tmp_path, run):
    (tmp_path / "dataset_info.json").write_text("{not json")
    src = write_jsonl(tmp_path / "in.jsonl", [json.loads(GOOD)])
    res = run("convert", src, "-o", tmp_path / "buf.jsonl", "--to", "llamafactory")
    assert res.code == 1 and f"{tmp_path / 'dataset_info.json'}: is not valid JSON" in res.err
    assert (tmp_path / "dataset_info.json").read_text() == "{not json"


def test_math_verify_missing_says_how_to_install(tmp_path, run, monkeypatch):
    import sys

    import rift_losses.data._grade as grade

    monkeypatch.setitem(sys.modules, "math_verify", None)  # as if not installed
    grade.parse_reference.cache_clear()
    src = write_jsonl(tmp_path / "in.jsonl", [json.loads(GOOD)])
    res = run("label", src, "-o", tmp_path / "out.jsonl")
    assert res.code == 1 and "pip install 'rift-losses[data]'" in res.err
    assert not (tmp_path / "out.jsonl").exists()


# Issue 9, case 10: small things, through the installed command.


def test_version():
    from importlib.metadata import version

    from datahelpers import run_command

    proc = run_command("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"rift-losses {version('rift-losses')}"


def test_an_unterminated_string_is_reported_once_with_its_column(tmp_path):
    from datahelpers import run_command

    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "a\n')
    proc = run_command("stats", src)
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        == f"rift-losses stats: error: {src}:1: invalid JSON: Unterminated string starting at column 12"
    )


def test_counts_of_one_are_singular(tmp_path):
    from datahelpers import run_command

    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "2+3?", "response": "5", "reward": 1.0, "id": 7}])
    proc = run_command("stats", src)
    assert proc.stdout.splitlines()[0] == f"{src}: 1 response to 1 problem (1 per problem; problems: the prompt)"
    assert "  all responses positive: 1 problem; no positive response: 0 problems" in proc.stdout.splitlines()
    proc = run_command("convert", src, "-o", tmp_path / "o.jsonl", "--to", "swift")
    assert proc.stdout.splitlines() == [
        f"convert --to swift: 1 row in 1 group -> {tmp_path / 'o.jsonl'}",
        "  not written (the host does not read them): id (1 row)",
    ]
    proc = run_command("normalize", src, "-o", tmp_path / "n.jsonl", "--method", "gpg_scaled")
    assert proc.stdout.splitlines()[::2] == [
        f"normalize (gpg_scaled): 1 row in 1 group (by the prompt) -> {tmp_path / 'n.jsonl'}",
        "  1 group has all-equal rewards (no relative signal)",
    ]


@pytest.mark.parametrize("command", ["label", "normalize", "stats", "convert"])
def test_a_utf8_byte_order_mark_is_accepted(tmp_path, command):
    from datahelpers import read_jsonl, run_command

    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + (GOOD + "\n" + GOOD + "\n").encode())
    args = [a.format(out=tmp_path / "out.jsonl") for a in COMMANDS[command]]
    proc = run_command(args[0], src, *args[1:])
    assert proc.returncode == 0, proc.stderr
    if command != "stats":
        out = read_jsonl(tmp_path / "out.jsonl")
        assert len(out) == 2 and all("\ufeff" not in k for r in out for k in r)
