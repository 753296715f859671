"""The four commands of ``rift-losses``, as functions: label, normalize, stats, convert.

Each reads a JSONL buffer one row at a time and returns a summary dict (the command line prints
it). Outputs are written atomically (:func:`~rift_losses.data._io.atomic_output`). Bad input
raises :class:`~rift_losses.data._io.DataError` naming ``file:line`` and the field.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import IO, Any

from .._fields import GROUP_COLUMN, REWARD_COLUMN, canonical_group  # what the host adapters read
from ._grade import (
    DEFAULT_TIMEOUT,
    GRADES,
    READINGS,
    TIMEOUT,
    UNLABELLED,
    grade_pair,
    parse_reference,
    require_math_verify,
)
from ._io import DataError, DigestTable, Progress, atomic_output, check_output, dumps, file_size, read_jsonl
from ._rows import Fields, Grouper, answer, conversation, turn_rewards

#: Hosts that ``convert --to`` writes for.
HOSTS = ("swift", "llamafactory")


_MAX_LINES_LISTED = 20
#: The error for an input without rows: an empty buffer is a mistake upstream, never a result.
_EMPTY = "must hold at least one row, got none (an empty file, or only blank lines); nothing written"


def _name(path) -> str:
    return "<stdin>" if str(path) == "-" else str(path)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``"1 problem"``, ``"2 problems"``, ``"1,000 responses"``."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def lines_list(lines: list[int], total: int) -> str:
    """``"line 3"``, ``"lines 3, 4, ..."`` (``total`` > listed: the list was cut)."""
    return ("line " if total == 1 else "lines ") + ", ".join(map(str, lines)) + (", ..." if total > len(lines) else "")


def _check_rewards(positive: float, negative: float) -> None:
    """Validate the constant rewards with the core's own checks (``constant_rewards``)."""
    from rift_losses import constant_rewards

    constant_rewards([True, False], positive=positive, negative=negative)


# ----------------------------------------------------------------------------------- label


def label(
    src,
    dst,
    *,
    fields: Fields = Fields(),  # noqa: B008 (a frozen dataclass)
    positive: float = 1.0,
    negative: float = -0.2,
    jobs: int = 1,
    strict: bool = False,
    timeout: int = DEFAULT_TIMEOUT,
    audit: bool = False,
    in_place: bool = False,
    progress: str = "auto",
    log: IO[str] | None = None,
) -> dict[str, Any]:
    """Grade each response against its reference answer and write the paper's constant rewards.

    Formula (paper section 4.1): ``r = positive`` (+1.0) if math-verify finds the response's
    final answer equal to the reference, else ``negative`` (-0.2). A response with no
    extractable answer is wrong; its lines are listed in the summary. A reference is read whole
    as math (an interval, a tuple, a number with its unit) or as text (words, compared case- and
    space-normalized); one that is neither is *unlabelled*: its rows are not graded and not
    written (its problem gets no reward rather than a wrong one), and their lines are listed.
    A response whose grading runs out of time is not written either (a verdict the verifier
    could not reach is no reward, never a wrong one); its lines are listed as timed out.

    Args:
        src: input JSONL (chat or prompt/response rows, each with the reference answer).
        dst: output JSONL: every input row with ``fields.reward`` set (an existing reward is
            replaced and counted).
        positive, negative: the constant rewards (``positive > 0``, ``negative <= 0``).
        jobs: worker processes for grading (math-verify takes about 1 ms a response).
        strict: fail (write nothing) if any reference cannot be read or any grading times out,
            after listing them all.
        timeout: seconds math-verify may spend on each of its two steps of one response
            (extraction, comparison): at most about ``2 * timeout`` a response.
        audit: also return ``audit``: each distinct reference with its first line and reading.
        in_place: allow ``dst`` to be ``src`` itself (it is replaced only on success).

    Returns:
        Summary: rows (graded), correct, wrong, no_answer (``no_answer`` is part of ``wrong``),
        no_answer_lines (the first 20), unlabelled (rows not written), unlabelled_lines (the
        first 20), timed_out, timed_out_lines (the first 20), readings (rows graded per reading:
        math, text), replaced_rewards, output; with ``audit``, the list ``audit``.

    Raises:
        DataError: bad input (``file:line``), a bad output path (before any input is read), or
            under ``strict`` an unparsable reference.
    """
    _check_rewards(positive, negative)
    require_math_verify()  # installed? (a file of text references alone would not need it: say so before any work)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise ValueError(f"timeout must be an integer number of seconds >= 1, got {timeout!r}")
    target = check_output(dst, inputs=[src], in_place=in_place)
    name = _name(src)
    counts = dict.fromkeys(GRADES, 0)
    no_answer_lines: list[int] = []
    unlabelled, unlabelled_lines = 0, []
    timed_out, timed_out_lines = 0, []
    readings = dict.fromkeys(READINGS, 0)
    audited: dict[str, int] = {}
    replaced = 0
    seen_rows = 0
    prog = Progress("label", file_size(src), stream=log, mode=progress)
    pool = None
    if jobs > 1:
        pool = _grading_pool(jobs)
    chunk_rows = 1 if pool is None else 64 * jobs
    rows = read_jsonl(src, prog)
    try:
        with atomic_output(target) as out:
            while True:
                chunk = list(islice(rows, chunk_rows))
                if not chunk:
                    break
                pairs, pending_error = [], None
                seen_rows += len(chunk)
                for line, row in chunk:  # validate in order; grade the rows before a bad one first
                    try:
                        response = conversation(row, fields, name, line).response
                        reference = answer(row, fields, name, line)
                        pairs.append((reference, response, timeout))
                        if audit and reference not in audited:
                            audited[reference] = line
                    except DataError as exc:
                        pending_error = exc
                        break
                verdicts = pool.map(grade_pair, pairs, chunksize=16) if pool is not None else map(grade_pair, pairs)
                for (line, row), (verdict, reading, _) in zip(chunk, verdicts):
                    if verdict == UNLABELLED:  # the reference cannot be read: no reward at all, not a wrong one
                        unlabelled += 1
                        if len(unlabelled_lines) < _MAX_LINES_LISTED:
                            unlabelled_lines.append(line)
                        continue
                    if verdict == TIMEOUT:  # no verdict reached: no reward, never a wrong one
                        timed_out += 1
                        if len(timed_out_lines) < _MAX_LINES_LISTED:
                            timed_out_lines.append(line)
                        continue
                    counts[verdict] += 1
                    readings[reading] += 1
                    if verdict == "no_answer" and len(no_answer_lines) < _MAX_LINES_LISTED:
                        no_answer_lines.append(line)
                    replaced += fields.reward in row
                    row[fields.reward] = positive if verdict == "correct" else negative
                    out.write(dumps(row))
                if pending_error is not None:
                    raise pending_error
            if not seen_rows:
                raise DataError(name, 0, _EMPTY)
            if strict and (unlabelled or timed_out):
                problems = []
                if unlabelled:
                    problems.append(
                        f"{count(unlabelled, 'row')} with a reference answer (field {fields.answer!r}) that "
                        f"cannot be read whole as math or as text, {lines_list(unlabelled_lines, unlabelled)}"
                    )
                if timed_out:
                    problems.append(
                        f"{count(timed_out, 'response')} whose grading took more than --timeout {timeout} s, "
                        f"{lines_list(timed_out_lines, timed_out)}"
                    )
                raise DataError(name, 0, "; ".join(problems) + "; nothing written (--strict)")
    finally:
        prog.close()
        if pool is not None:
            pool.terminate()
    total = sum(counts.values())
    summary = {
        "command": "label",
        "input": name,
        "output": str(dst),
        "rows": total,
        "correct": counts["correct"],
        "wrong": counts["wrong"] + counts["no_answer"],
        "no_answer": counts["no_answer"],
        "no_answer_lines": no_answer_lines,
        "unlabelled": unlabelled,
        "unlabelled_lines": unlabelled_lines,
        "timed_out": timed_out,
        "timed_out_lines": timed_out_lines,
        "timeout": timeout,
        "readings": readings,
        "positive_reward": positive,
        "negative_reward": negative,
        "replaced_rewards": replaced,
    }
    if audit:
        summary["audit"] = [{"line": line, "reference": ref, **_reading_of(ref)} for ref, line in audited.items()]
    return summary


def _reading_of(reference: str) -> dict[str, str]:
    try:
        parsed = parse_reference(reference)
    except ValueError as exc:
        return {"reading": UNLABELLED, "as": str(exc)}
    return {"reading": parsed.reading, "as": parsed.describe().split(" ", 1)[1]}


def _grading_pool(jobs: int):
    """``jobs`` spawned grading processes that end quietly if the command is killed (``kill -9``).

    A worker of a killed parent dies of SIGPIPE on its next write instead of printing a
    ``BrokenPipeError`` traceback, and multiprocessing's resource tracker (started here) does
    not warn about the semaphores the killed parent could not release.
    """
    import multiprocessing

    quiet = "ignore::UserWarning:multiprocessing.resource_tracker"
    previous = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = f"{previous},{quiet}" if previous else quiet
    try:
        return multiprocessing.get_context("spawn").Pool(jobs, initializer=_quiet_worker)
    finally:
        if previous is None:
            del os.environ["PYTHONWARNINGS"]
        else:
            os.environ["PYTHONWARNINGS"] = previous


def _quiet_worker() -> None:
    """A grading worker: its parent handles Ctrl-C and broken pipes; a killed parent ends it without a traceback."""
    import signal
    import threading
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parent = os.getppid()

    def watch() -> None:  # a worker blocked on the task queue of a dead parent would wait forever
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="rift-losses-parent-watch").start()


# ------------------------------------------------------------------------------- normalize


def normalize(
    src,
    dst,
    *,
    method: str,
    fields: Fields = Fields(),  # noqa: B008 (a frozen dataclass)
    raw_field: str = "raw_reward",
    batch_rows: int = 4096,
    in_place: bool = False,
    progress: str = "auto",
    log: IO[str] | None = None,
) -> dict[str, Any]:
    """Normalize rewards within whole groups with the core's ``normalize_rewards`` (eq. 6-8).

    A group is one problem's responses: the rows sharing the group field, else the prompt.
    Rows of a group must be next to each other (as samplers write them); the file streams
    through one group at a time, several groups per call of the core.

    Args:
        method: one of :data:`rift_losses.NORMALIZATIONS` (gaussian: eq. 6, gpg_mean: eq. 7,
            gpg_scaled: eq. 8).
        raw_field: where each row keeps its reward before normalization (must be absent).
        in_place: allow ``dst`` to be ``src`` itself (it is replaced only on success).

    Returns:
        Summary: rows, groups, flat_groups (all rewards equal: 0 after gaussian/gpg_mean),
        positive, negative, zero (after normalization), output.
    """
    import torch

    from rift_losses import normalize_rewards

    normalize_rewards(torch.zeros(0), [], method=method)  # the core's own check of `method`, before reading
    target = check_output(dst, inputs=[src], in_place=in_place)
    name = _name(src)
    grouper = Grouper(fields, name)
    closed = DigestTable()
    summary = Counter()
    prog = Progress("normalize", file_size(src), stream=log, mode=progress)

    def flush(done: list, out) -> None:
        if not done:
            return
        rewards = torch.tensor([r for _, r, _ in done], dtype=torch.float64)
        values = normalize_rewards(rewards, torch.tensor([g for _, _, g in done]), method=method).tolist()
        for (row, r, _), v in zip(done, values):
            row[raw_field] = r
            row[fields.reward] = v
            summary["positive" if v > 0 else "negative" if v < 0 else "zero"] += 1
            out.write(dumps(row))
        done.clear()

    try:
        with atomic_output(target) as out:
            done: list = []  # rows of complete groups: (row, reward, group index in the batch)
            current, current_rows, last_line, n_groups = None, [], 0, 0

            def close_group() -> None:
                nonlocal n_groups
                closed[current] = last_line
                rewards = [r for _, r in current_rows]
                summary["flat_groups"] += min(rewards) == max(rewards)
                n_groups += 1
                done.extend((row, r, n_groups) for row, r in current_rows)
                if len(done) >= batch_rows:
                    flush(done, out)

            for line, row in read_jsonl(src, prog):
                conv = conversation(row, fields, name, line)
                r, per_turn = turn_rewards(row, conv, fields, name, line)
                if per_turn is not None:
                    raise DataError(
                        name,
                        line,
                        f"field {fields.messages!r} must not carry per-message {fields.reward!r} values for normalize, "
                        "got per-turn rewards: group normalization (eq. 6-8) is defined over one reward per response, "
                        "and the hosts' normalized losses refuse per-turn rewards too; normalize the turn rewards "
                        "yourself, or move the reward to the row",
                    )
                if raw_field in row:
                    raise DataError(
                        name,
                        line,
                        f"field {raw_field!r} is already there: is this buffer normalized already? (choose another "
                        "name with --raw-field)",
                    )
                key, desc = grouper.key(row, conv, line)
                if key != current:
                    if current is not None:
                        close_group()
                    earlier = closed.get(key)
                    if earlier is not None:
                        raise DataError(
                            name,
                            line,
                            f"the rows of group {desc} are not next to each other (the group ran until line "
                            f"{earlier}); "
                            f"normalize reads each group as one run of rows: sort the file by {grouper.what} first",
                        )
                    current, current_rows = key, []
                current_rows.append((row, r))
                last_line = line
            if current is None:
                raise DataError(name, 0, _EMPTY)
            close_group()
            flush(done, out)
    finally:
        prog.close()
    return {
        "command": "normalize",
        "input": name,
        "output": str(dst),
        "method": method,
        "rows": summary["positive"] + summary["negative"] + summary["zero"],
        "groups": len(closed),
        "grouped_by": grouper.what if grouper.by_field is not None else "the prompt",
        "flat_groups": summary["flat_groups"],
        "positive": summary["positive"],
        "negative": summary["negative"],
        "zero": summary["zero"],
    }


# ----------------------------------------------------------------------------------- stats

_POS, _NEG, _ZERO, _FLAG_BITS = 1, 2, 4, 3


def stats(src, *, fields: Fields = Fields(), progress: str = "auto", log: IO[str] | None = None) -> dict[str, Any]:  # noqa: B008 (a frozen dataclass)
    """The paper's Table 1 and Table 4 for a buffer.

    Table 1: responses, positive (r > 0), negative (r < 0), % positive = positive / responses.
    Table 4: problems (groups: the group field, else the prompt), problems with mixed rewards
    (at least one r > 0 and one r < 0), % mixed = mixed / problems. Rows of a problem may be
    anywhere in the file (16-32 bytes of memory per problem).

    Returns:
        A dict: problems, responses, positive, negative, zero, positive_pct, mixed, mixed_pct,
        all_positive, none_positive, per_problem_min, per_problem_max, grouped_by.
    """
    name = _name(src)
    grouper = Grouper(fields, name)
    table = DigestTable()
    counts, turns, turned = Counter(), Counter(), 0
    prog = Progress("stats", file_size(src), stream=log, mode=progress)
    try:
        for line, row in read_jsonl(src, prog):
            conv = conversation(row, fields, name, line)
            r, per_turn = turn_rewards(row, conv, fields, name, line)
            key, _ = grouper.key(row, conv, line)
            turned += per_turn is not None
            assistant = sum(m.get("role") == "assistant" for m in conv.messages)
            for t in per_turn if per_turn is not None else [r] * assistant:
                turns["positive" if t > 0 else "negative" if t < 0 else "zero"] += 1
            flag = _POS if r > 0 else _NEG if r < 0 else _ZERO
            counts[flag] += 1
            table[key] = (table.get(key, 0) | flag) + (1 << _FLAG_BITS)
    finally:
        prog.close()
    responses = sum(counts.values())
    if not responses:
        raise DataError(name, 0, _EMPTY.replace("; nothing written", ""))
    problems = len(table)
    mixed = all_pos = none_pos = 0
    sizes_min, sizes_max = None, 0
    for value in table.values():
        flags, size = value & ((1 << _FLAG_BITS) - 1), value >> _FLAG_BITS
        mixed += (flags & _POS) and (flags & _NEG) and 1 or 0
        all_pos += flags == _POS
        none_pos += not flags & _POS
        sizes_min = size if sizes_min is None else min(sizes_min, size)
        sizes_max = max(sizes_max, size)

    def pct(a: int, b: int) -> float | None:
        return round(100.0 * a / b, 1) if b else None

    return {
        "input": name,
        "problems": problems,
        "responses": responses,
        "positive": counts[_POS],
        "negative": counts[_NEG],
        "zero": counts[_ZERO],
        "positive_pct": pct(counts[_POS], responses),
        "mixed": mixed,
        "mixed_pct": pct(mixed, problems),
        "all_positive": all_pos,
        "none_positive": none_pos,
        "per_problem_min": sizes_min or 0,
        "per_problem_max": sizes_max,
        "grouped_by": grouper.what if grouper.by_field is not None else "the prompt",
        "rows_with_turn_rewards": turned,
        "turns": sum(turns.values()),
        "turns_positive": turns["positive"],
        "turns_negative": turns["negative"],
        "turns_zero": turns["zero"],
    }


def format_stats(s: dict[str, Any]) -> str:
    """``stats`` as the two small tables of the paper (Table 1 and Table 4)."""

    def pct(v):
        return "" if v is None else f"{v:5.1f}%"

    k = (
        s["per_problem_min"]
        if s["per_problem_min"] == s["per_problem_max"]
        else f"{s['per_problem_min']}-{s['per_problem_max']}"
    )
    lines = [
        f"{s['input']}: {count(s['responses'], 'response')} to {count(s['problems'], 'problem')} ({k} per problem; "
        f"problems: {s['grouped_by']})",
        "",
        "  Table 1 (responses)   # Num.   # Pos.   # Neg.   % Pos.",
        f"                      {s['responses']:>7,}  {s['positive']:>7,}  {s['negative']:>7,}   "
        f"{pct(s['positive_pct'])}",
        "",
        "  Table 4 (problems)    # Num.   # Mixed-Reward   % Mixed",
        f"                      {s['problems']:>7,}  {s['mixed']:>15,}   {pct(s['mixed_pct'])}",
        "",
        f"  all responses positive: {count(s['all_positive'], 'problem')}; no positive response: "
        f"{count(s['none_positive'], 'problem')}",
    ]
    if s["zero"]:
        lines.append(f"  zero rewards (neither positive nor negative): {count(s['zero'], 'response')}")
    if s.get("rows_with_turn_rewards"):
        lines.append(
            f"  assistant turns: {s['turns']:,} ({s['turns_positive']:,} positive, {s['turns_negative']:,} negative, "
            f"{s['turns_zero']:,} zero); {count(s['rows_with_turn_rewards'], 'row')} with per-turn rewards (a row "
            "without its own reward counts in the tables by its last turn)"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------- convert


def _turn_message(message: dict, field: str) -> dict:
    """A message with its own reward under :data:`REWARD_COLUMN` (the name the hosts read)."""
    if field == REWARD_COLUMN or field not in message:
        return message
    out = {k: v for k, v in message.items() if k != field}
    out[REWARD_COLUMN] = message[field]
    return out


_LF_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def _check_llamafactory_roles(messages: list, fields: Fields, path: str, line: int) -> None:
    """LLaMA-Factory's sharegpt reader drops a conversation whose roles do not alternate: refuse it here."""
    roles = [m["role"] for m in messages]
    body = roles[1:] if roles[0] == "system" else roles
    expected = ["user", "assistant"] * (len(body) // 2 + 1)
    if body != expected[: len(body)] or len(body) % 2:
        raise DataError(
            path,
            line,
            f"field {fields.messages!r} must be an optional 'system' message then 'user'/'assistant' turns in turn "
            f"(LLaMA-Factory drops any other conversation), got roles {roles}",
        )


def _read_dataset_info(shown: Path, path: Path) -> dict:
    """The datasets of an existing ``dataset_info.json`` (``{}`` if there is none); :class:`DataError` if unusable."""
    if not path.exists():
        return {}
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DataError(
            str(shown), 0, f"cannot read: {exc.strerror}; fix its permissions, or pass --dataset-info"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            str(shown),
            0,
            f"is not UTF-8 text ({exc.reason} at byte {exc.start}); fix or remove it, or pass --dataset-info",
        ) from None
    try:
        info = json.loads(text)
    except ValueError as exc:
        raise DataError(str(shown), 0, f"is not valid JSON ({exc}); fix or remove it, or pass --dataset-info") from None
    if not isinstance(info, dict):
        raise DataError(str(shown), 0, f"must hold a JSON object of datasets, got {type(info).__name__}")
    return info


@contextmanager
def _locked_directory(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (Linux, macOS; elsewhere no lock).

    Concurrent ``convert --to llamafactory`` runs into one ``dataset_info.json`` take turns to
    read, update and replace it, so no run's entry is lost. The lock is on the directory itself
    (no lock file is left behind) and ends with the process, even after ``kill -9``.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def convert(
    src,
    dst,
    *,
    to: str,
    fields: Fields = Fields(),  # noqa: B008 (a frozen dataclass)
    dataset_name: str | None = None,
    dataset_info: str | os.PathLike | None = None,
    in_place: bool = False,
    progress: str = "auto",
    log: IO[str] | None = None,
) -> dict[str, Any]:
    """Write a labelled buffer in a host's dataset layout.

    Each output row is ``{"messages": [...], "reward": r, "group": g}``: chat messages ending
    with the sampled response, its reward, and its group (the group field, else the prompt's
    64-bit digest as 16 hex digits), which the hosts' group-normalized losses read. Other input
    fields are not written; the summary names them with their counts.

    - ``to="swift"``: the JSONL that ``swift sft --dataset FILE`` reads (``messages`` format;
      the extra columns ``reward`` and ``group`` are read by the MS-Swift adapter).
    - ``to="llamafactory"``: the JSONL, plus its entry in ``dataset_info.json`` (beside the
      output unless ``dataset_info`` is given; other entries are kept): sharegpt formatting
      with OpenAI-style role/content tags and the column mapping, ``"reward": "reward"`` and
      ``"group": "group"`` included (and ``"reward_tag": "reward"`` in the tags when rows carry
      per-message rewards). ``dataset_info.json`` is read and checked (a readable JSON
      object) before anything is written.

    ``in_place`` allows ``dst`` to be ``src`` itself (replaced only on success).

    Returns:
        Summary: rows, groups, positive, negative, zero (rewards), not_written (field -> rows),
        output, dataset_info, dataset_name.
    """
    if to not in HOSTS:
        raise ValueError(f"to must be one of {', '.join(map(repr, HOSTS))}, got {to!r}")
    target = check_output(dst, inputs=[src], in_place=in_place)
    if to == "llamafactory":
        info_path = Path(dataset_info) if dataset_info is not None else Path(dst).parent / "dataset_info.json"
        info_target = check_output(info_path, inputs=[src], in_place=in_place)
        if info_target == target:
            raise DataError(
                str(info_path), 0, f"is the output file {dst} too; the dataset_info.json must be another file"
            )
        info = _read_dataset_info(info_path, info_target)
    name = _name(src)
    grouper = Grouper(fields, name)
    used = {fields.messages, fields.prompt, fields.response, fields.reward}
    not_written = Counter()
    signs = Counter()
    turned = row_rewarded = 0
    groups = DigestTable()
    rows = 0
    prog = Progress("convert", file_size(src), stream=log, mode=progress)
    try:
        with atomic_output(target) as out:
            for line, row in read_jsonl(src, prog):
                conv = conversation(row, fields, name, line)
                r, per_turn = turn_rewards(row, conv, fields, name, line)
                key, _ = grouper.key(row, conv, line)
                if to == "llamafactory":
                    _check_llamafactory_roles(conv.messages, fields, name, line)
                if grouper.by_field:  # as the hosts compare it: 1.0 is written 1 (one group with 1)
                    group = canonical_group(row[fields.group])
                else:
                    group = f"{key:016x}"
                groups[key] = 1
                for k in row:
                    if k not in used and not (grouper.by_field and k == fields.group):
                        not_written[k] += 1
                messages = conv.messages
                if per_turn is not None:  # per-message rewards kept, under the hosts' field name
                    messages = [_turn_message(m, fields.reward) for m in messages]
                    turned += 1
                out_row = {"messages": messages, REWARD_COLUMN: r, GROUP_COLUMN: group}
                if per_turn is not None and fields.reward not in row:
                    del out_row[REWARD_COLUMN]  # no row reward: each assistant turn carries its own
                else:
                    row_rewarded += 1
                out.write(dumps(out_row))
                signs["positive" if r > 0 else "negative" if r < 0 else "zero"] += 1
                rows += 1
            if not rows:
                raise DataError(name, 0, _EMPTY)
    finally:
        prog.close()
    summary: dict[str, Any] = {
        "command": "convert",
        "to": to,
        "input": name,
        "output": str(dst),
        "rows": rows,
        "groups": len(groups),
        "positive": signs["positive"],
        "negative": signs["negative"],
        "zero": signs["zero"],
        "not_written": dict(not_written),
        "rows_with_turn_rewards": turned,
    }
    if to == "llamafactory":
        entry_name = dataset_name or Path(dst).stem
        entry = {
            "file_name": os.path.relpath(Path(dst).resolve(), info_path.resolve().parent),
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "reward": REWARD_COLUMN, "group": GROUP_COLUMN},
            "tags": dict(_LF_TAGS),
        }
        if not row_rewarded:  # every row's rewards are on its messages: there is no reward column to map
            del entry["columns"]["reward"]
        if turned:  # the adapter reads per-message rewards where the entry names their key (docs/llamafactory.md)
            entry["tags"]["reward_tag"] = REWARD_COLUMN
        with _locked_directory(info_target.parent):  # read, update, replace: one writer at a time
            info = _read_dataset_info(info_path, info_target)  # as it is now (another convert may have added one)
            summary["replaced_entry"] = entry_name in info
            info[entry_name] = entry
            with atomic_output(info_target) as handle:
                handle.write(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        summary.update(
            dataset_info=str(info_path),
            dataset_name=entry_name,
            columns=list(entry["columns"]),
            reward_tag=entry["tags"].get("reward_tag"),
        )
    return summary
