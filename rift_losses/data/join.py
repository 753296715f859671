"""``rift-losses join``: give sampled responses their problem's reference answer, matched on the prompt.

A sampler such as ``swift sample`` writes each sample as a chat row whose last assistant message
is the sample; it drops the input's other columns and overwrites the reference solution with the
sample, so the reference answer must come back from the problems file. ``join`` matches each
sample's prompt (every message before its last, roles and contents) with a problem's prompt
(every message before a final assistant message, which is the reference solution a sampler
replaces) and writes the sample with the problem's answer field. Rows keep their order and every
other field (MS-Swift's ``id``, say).

    swift sample --dataset problems.jsonl ... --output_dir out --output_file samples.jsonl
    rift-losses join out/samples.jsonl --problems problems.jsonl -o joined.jsonl
    rift-losses label joined.jsonl -o labelled.jsonl
"""

from __future__ import annotations

import json
from typing import IO, Any

from ._io import DataError, Progress, atomic_output, check_output, dumps, file_size, read_jsonl, short
from ._rows import Fields, answer, conversation


def _prompt_key(messages: list) -> str:
    return json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)


def _problem_prompt(row: dict, fields: Fields, path: str, line: int) -> list:
    """A problem's prompt messages: its chat messages without a final assistant message, or its prompt text."""
    if fields.messages in row:
        messages = row[fields.messages]
        if (
            not isinstance(messages, list)
            or not messages
            or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            )
        ):
            raise DataError(
                path,
                line,
                f"field {fields.messages!r} must be a non-empty list of role/content messages, got {short(messages)}",
            )
        if messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        if not messages:
            raise DataError(
                path,
                line,
                f"field {fields.messages!r} must hold a prompt before the reference solution, got only "
                "an assistant message",
            )
        return messages
    if fields.prompt in row and isinstance(row[fields.prompt], str):
        return [{"role": "user", "content": row[fields.prompt]}]
    raise DataError(
        path,
        line,
        f"missing field {fields.messages!r} (chat rows) or {fields.prompt!r}; fields present: "
        f"{', '.join(map(repr, row)) or 'none'}",
    )


def join(
    src,
    dst,
    *,
    problems,
    fields: Fields = Fields(),  # noqa: B008 (a frozen dataclass)
    in_place: bool = False,
    progress: str = "auto",
    log: IO[str] | None = None,
) -> dict[str, Any]:
    """Write each sample of ``src`` with the answer of the problem whose prompt it answers.

    Args:
        src: sampled responses (chat rows, the sample last; or prompt/response rows).
        dst: output JSONL: every sample with ``fields.answer`` set from its problem.
        problems: JSONL of problems with their reference answers (``fields.answer``); a chat row's
            final assistant message (the reference solution) is not part of its prompt.
        in_place: allow ``dst`` to be ``src`` itself.

    Returns:
        Summary: command, rows (samples written), problems (in the problems file), answered
        (problems with at least one sample), output.

    Raises:
        DataError: a sample whose prompt matches no problem, two problems with the same prompt
            and different answers, or a bad row (``file:line``).
    """
    target = check_output(dst, inputs=[src, problems], in_place=in_place)
    pname, sname = str(problems), "<stdin>" if str(src) == "-" else str(src)
    table: dict[str, tuple[str, int]] = {}
    for line, row in read_jsonl(problems):
        key = _prompt_key(_problem_prompt(row, fields, pname, line))
        ans = answer(row, fields, pname, line)
        if key in table and table[key][0] != ans:
            raise DataError(
                pname,
                line,
                f"the prompt of line {table[key][1]} must have one answer, got {short(table[key][0])} "
                f"there and {short(ans)} here",
            )
        table.setdefault(key, (ans, line))
    if not table:
        raise DataError(pname, 0, "must hold at least one problem, got none")
    answered: set[str] = set()
    rows = 0
    prog = Progress("join", file_size(src), stream=log, mode=progress)
    try:
        with atomic_output(target) as out:
            for line, row in read_jsonl(src, prog):
                conv = conversation(row, fields, sname, line)
                key = _prompt_key(conv.messages[:-1])
                if key not in table:
                    raise DataError(
                        sname,
                        line,
                        f"the sample's prompt must match a problem of {pname}, got none for "
                        f"{short(conv.messages[-2]['content'])}",
                    )
                row = dict(row)
                row[fields.answer] = table[key][0]
                out.write(dumps(row))
                answered.add(key)
                rows += 1
    finally:
        prog.close()
    return {"command": "join", "rows": rows, "problems": len(table), "answered": len(answered), "output": str(target)}
