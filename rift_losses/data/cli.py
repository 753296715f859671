"""``rift-losses``: from sampled responses to a RIFT buffer (label, normalize, stats, convert).

    rift-losses label rollouts.jsonl -o labelled.jsonl            # math-verify, +1.0 / -0.2
    rift-losses stats labelled.jsonl                              # the paper's Table 1 and Table 4
    rift-losses normalize labelled.jsonl -o norm.jsonl --method gaussian   # eq. 6-8 (optional)
    rift-losses convert labelled.jsonl -o data/buffer.jsonl --to llamafactory   # or --to swift
    rift-losses join samples.jsonl --problems problems.jsonl -o joined.jsonl    # reference answers onto samples

Exit status: 0 on success, 1 on bad input (the message names file:line and the field) or a bad
output path, 2 on a bad command line, 128 + N on signal N (130 Ctrl-C, 129 SIGHUP, 143 SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from ._rows import Fields

_DESCRIPTION = "From sampled responses to a RIFT buffer (RIFT: Reward-Informed Fine-Tuning, arXiv 2601.09253)."


def _fields(args: argparse.Namespace) -> Fields:
    return Fields(
        messages=args.messages_field,
        prompt=args.prompt_field,
        response=args.response_field,
        answer=getattr(args, "answer_field", "answer"),
        reward=args.reward_field,
        group=getattr(args, "group_field", None) or "group",
        group_given=getattr(args, "group_field", None) is not None,
    )


_OUTPUT_HELP = (
    "the output JSONL, written to a temporary file that replaces it only on success; it must be a regular file "
    "or a new path (a symlink is followed: its target is replaced), and not the input unless --in-place is given"
)
_IN_PLACE_HELP = "allow -o to be the input file itself (through any path or link); it is replaced only on success"


def _normalization(value: str) -> str:
    """A ``--method`` value, checked against :data:`rift_losses.NORMALIZATIONS` when given (that imports torch)."""
    from rift_losses import NORMALIZATIONS

    if value not in NORMALIZATIONS:
        listing = ", ".join(map(repr, NORMALIZATIONS))
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {listing})")
    return value


def build_parser() -> argparse.ArgumentParser:
    from rift_losses import __version__

    from ._grade import DEFAULT_TIMEOUT
    from .commands import HOSTS

    common = argparse.ArgumentParser(add_help=False)
    f = common.add_argument_group("field names (input rows: chat 'messages', or 'prompt' and 'response')")
    f.add_argument(
        "--messages-field",
        default="messages",
        metavar="NAME",
        help="chat messages, the sampled response last (default: %(default)s)",
    )
    f.add_argument(
        "--prompt-field",
        default="prompt",
        metavar="NAME",
        help="prompt text of prompt/response rows (default: %(default)s)",
    )
    f.add_argument(
        "--response-field",
        default="response",
        metavar="NAME",
        help="sampled response of prompt/response rows (default: %(default)s)",
    )
    f.add_argument("--reward-field", default="reward", metavar="NAME", help="the reward (default: %(default)s)")
    o = common.add_argument_group("output")
    o.add_argument(
        "--progress",
        choices=("auto", "bar", "plain", "none"),
        default="auto",
        help="progress on stderr: a bar on a terminal, plain lines when piped (auto, the default)",
    )
    o.add_argument("--json", action="store_true", help="print the summary as JSON")

    grouping = argparse.ArgumentParser(add_help=False)
    grouping.add_argument(
        "--group-field",
        default=None,
        metavar="NAME",
        help="the problem a response answers; default: 'group' if the first row has it, else the prompt",
    )

    parser = argparse.ArgumentParser(
        prog="rift-losses",
        description=_DESCRIPTION,
        epilog="\n".join(__doc__.split("\n")[2:7]) + "\nEach command: rift-losses COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "label", parents=[common], help="grade responses with math-verify and write the paper's constant rewards"
    )
    p.add_argument("input", help="JSONL of sampled responses with reference answers ('-': stdin)")
    p.add_argument("-o", "--output", required=True, help="labelled JSONL: " + _OUTPUT_HELP)
    p.add_argument("--in-place", action="store_true", help=_IN_PLACE_HELP)
    p.add_argument(
        "--answer-field", default="answer", metavar="NAME", help="the reference answer (default: %(default)s)"
    )
    p.add_argument(
        "--positive", type=float, default=1.0, help="reward of a correct response (default: %(default)s, the paper's)"
    )
    p.add_argument(
        "--negative", type=float, default=-0.2, help="reward of a wrong one, no answer included (default: %(default)s)"
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="grading processes (math-verify: about 1 ms a response; default: %(default)s)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 1, write nothing) if any reference answer cannot be read whole (as math or as text) or "
        "any grading times out; by default such rows are left out of the output, and the summary lists their lines",
    )
    p.add_argument(
        "--timeout",
        type=int,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="seconds math-verify may spend extracting one response's answer, and again comparing it; a response "
        "that takes longer gets no reward and is listed (default: %(default)s)",
    )
    p.add_argument(
        "--audit",
        action="store_true",
        help="also print how each distinct reference answer is read (math, text or unlabelled), with its first line",
    )

    p = sub.add_parser(
        "normalize", parents=[common, grouping], help="normalize rewards within each problem's responses (eq. 6-8)"
    )
    p.add_argument("input", help="labelled JSONL; each problem's rows next to each other ('-': stdin)")
    p.add_argument("-o", "--output", required=True, help="JSONL with normalized rewards: " + _OUTPUT_HELP)
    p.add_argument("--in-place", action="store_true", help=_IN_PLACE_HELP)
    p.add_argument(
        "--method",
        required=True,
        type=_normalization,  # not choices=: help would list them, importing torch
        metavar="METHOD",
        help="gaussian: eq. 6, gpg_mean: eq. 7, gpg_scaled: eq. 8",
    )
    p.add_argument(
        "--raw-field",
        default="raw_reward",
        metavar="NAME",
        help="keeps each reward before normalization (default: %(default)s)",
    )

    p = sub.add_parser(
        "stats",
        parents=[common, grouping],
        help="the paper's Table 1 and Table 4 for a buffer; mean@k and pass@k with --k",
    )
    p.add_argument("input", help="labelled JSONL ('-': stdin)")
    p.add_argument(
        "--k", type=int, default=None, metavar="K",
        help="also mean@K and pass@K (unbiased when a problem has more than K samples) of a labelled "
             "set of samples of an evaluation set",
    )  # fmt: skip

    p = sub.add_parser(
        "join",
        parents=[common],
        help="give sampled responses (e.g. `swift sample`'s output) their problem's reference answer",
    )
    p.add_argument("input", help="sampled responses, chat rows with the sample last ('-': stdin)")
    p.add_argument(
        "--problems", required=True, help="JSONL of the problems sampled from, each with its reference answer"
    )
    p.add_argument("-o", "--output", required=True, help="the samples with the answer field: " + _OUTPUT_HELP)
    p.add_argument("--in-place", action="store_true", help=_IN_PLACE_HELP)
    p.add_argument(
        "--answer-field",
        default="answer",
        metavar="NAME",
        help="the reference answer, read from --problems and written (default: %(default)s)",
    )

    p = sub.add_parser(
        "convert", parents=[common, grouping], help="write a labelled buffer in MS-Swift's or LLaMA-Factory's layout"
    )
    p.add_argument("input", help="labelled JSONL ('-': stdin)")
    p.add_argument("-o", "--output", required=True, help="the host's JSONL: " + _OUTPUT_HELP)
    p.add_argument("--in-place", action="store_true", help=_IN_PLACE_HELP)
    p.add_argument("--to", required=True, choices=HOSTS, help="the host")
    p.add_argument(
        "--dataset-name",
        default=None,
        help="llamafactory: the dataset_info.json entry (default: the output's file name without extension)",
    )
    p.add_argument(
        "--dataset-info",
        default=None,
        help="llamafactory: the dataset_info.json to add the entry to (default: beside the output); checked (a "
        "readable JSON object) before anything is written",
    )
    return parser


def _signed(x: float) -> str:
    return f"+{x!r}" if x > 0 else repr(x)


def _print_summary(s: dict) -> None:
    from .commands import count, lines_list

    cmd = s["command"]
    if cmd == "label":
        print(f"label: {count(s['rows'], 'response')} graded by math-verify -> {s['output']}")
        print(f"  correct {s['correct']:>9,}   reward {_signed(s['positive_reward'])}")
        note = ""
        if s["no_answer"]:
            note = (
                f"   ({s['no_answer']:,} with no extractable answer, counted wrong: "
                f"{lines_list(s['no_answer_lines'], s['no_answer'])})"
            )
        print(f"  wrong   {s['wrong']:>9,}   reward {_signed(s['negative_reward'])}{note}")
        if s["unlabelled"]:
            print(
                f"  unlabelled {s['unlabelled']:>6,}   not written: their reference answer cannot be read whole as "
                f"math or as text ({lines_list(s['unlabelled_lines'], s['unlabelled'])}); --strict makes this an error"
            )
        if s["timed_out"]:
            print(
                f"  timed out {s['timed_out']:>7,}   not written: grading took more than --timeout {s['timeout']} s "
                f"({lines_list(s['timed_out_lines'], s['timed_out'])}); --strict makes this an error"
            )
        readings = ", ".join(f"{n:,} as {k}" for k, n in s["readings"].items())
        print(f"  references read: {readings}" + (f", {s['unlabelled']:,} unlabelled" if s["unlabelled"] else ""))
        for item in s.get("audit", ()):
            print(f"  audit: line {item['line']}: {item['reading']:<10} {item['reference']!r} -> {item['as']}")
        if s["replaced_rewards"]:
            print(f"  replaced an existing reward on {count(s['replaced_rewards'], 'row')}")
    elif cmd == "normalize":
        print(
            f"normalize ({s['method']}): {count(s['rows'], 'row')} in {count(s['groups'], 'group')} (by "
            f"{s['grouped_by']}) -> {s['output']}"
        )
        print(f"  after: {s['positive']:,} positive, {s['negative']:,} negative, {s['zero']:,} zero")
        if s["flat_groups"]:
            verb = "has" if s["flat_groups"] == 1 else "have"
            print(f"  {count(s['flat_groups'], 'group')} {verb} all-equal rewards (no relative signal)")
    elif cmd == "join":
        print(
            f"join: {count(s['rows'], 'sample')} given the answers of {s['answered']:,} of "
            f"{count(s['problems'], 'problem')} -> {s['output']}"
        )
    elif cmd == "convert":
        print(f"convert --to {s['to']}: {count(s['rows'], 'row')} in {count(s['groups'], 'group')} -> {s['output']}")
        if "dataset_info" in s:
            verb = "replaced" if s["replaced_entry"] else "added"
            tag = f"; per-message rewards: reward_tag {s['reward_tag']!r}" if s.get("reward_tag") else ""
            columns = ", ".join(s["columns"])
            print(f"  {verb} dataset {s['dataset_name']!r} in {s['dataset_info']} (columns: {columns}{tag})")
        if s["not_written"]:
            dropped = ", ".join(f"{k} ({count(v, 'row')})" for k, v in s["not_written"].items())
            print(f"  not written (the host does not read them): {dropped}")


def untrainable_warning(command: str, s: dict) -> str | None:
    """A loud warning when every reward of the buffer (after normalization) is 0: a RIFT run on it learns nothing."""
    from .commands import count

    if command == "label":
        rows, all_zero = s["rows"], s["correct"] == 0 and s["negative_reward"] == 0
        where, what = s["output"], "every reward written is 0 (no response is correct and --negative is 0)"
    elif command == "normalize":
        rows, all_zero = s["rows"], s["positive"] == s["negative"] == 0
        where = s["output"]
        what = (
            f"every reward is 0 after {s['method']} normalization ({s['flat_groups']:,} of "
            f"{count(s['groups'], 'group')} with all-equal rewards)"
        )
    else:
        rows = s["responses"] if command == "stats" else s["rows"]
        all_zero = s["positive"] == s["negative"] == 0
        where, what = s["input"], "every reward is 0"
    if not rows or not all_zero:
        return None
    return (
        f"rift-losses {command}: WARNING: {what} in {where} ({count(rows, 'row')}): a RIFT loss on it is 0 with a zero "
        "gradient, so training on it learns nothing"
    )


class _Signalled(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread so that the temporary output is removed as on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_signalled(signum, frame):
    raise _Signalled(signum)


def _catch_signals() -> dict:
    """Raise :class:`_Signalled` on SIGTERM and SIGHUP, unless the signal was ignored when we started.

    An ignored signal stays ignored: under ``nohup`` a hang-up must not stop the command (Python
    keeps an ignored SIGINT ignored the same way, for commands started in the background).
    """
    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            try:
                previous[signum] = signal.signal(signum, _raise_signalled)
            except ValueError:  # not the main thread: leave the signals alone
                break
    return previous


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rift-losses`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from . import commands
    from ._io import DataError

    fields = _fields(args)
    common = {"fields": fields, "progress": args.progress}
    previous = _catch_signals()
    try:
        if args.command == "label":
            summary = commands.label(
                args.input, args.output, positive=args.positive, negative=args.negative, jobs=args.jobs,
                strict=args.strict, timeout=args.timeout, audit=args.audit, in_place=args.in_place, **common,
            )  # fmt: skip
        elif args.command == "normalize":
            summary = commands.normalize(
                args.input, args.output, method=args.method, raw_field=args.raw_field, in_place=args.in_place, **common
            )
        elif args.command == "stats":
            if args.k is not None and args.input == "-":
                raise ValueError("input must be a file for --k (it is read twice), got '-' (stdin)")
            summary = commands.stats(args.input, **common)
            if args.k is not None:
                from .at_k import at_k

                summary.update(
                    {
                        key: v
                        for key, v in at_k(args.input, k=args.k, fields=fields).items()
                        if key in ("k", "mean_at_k", "pass_at_k")
                    }
                )
        elif args.command == "join":
            from .join import join

            summary = join(args.input, args.output, problems=args.problems, in_place=args.in_place, **common)
        else:
            summary = commands.convert(
                args.input, args.output, to=args.to, dataset_name=args.dataset_name, dataset_info=args.dataset_info,
                in_place=args.in_place, **common,
            )  # fmt: skip
    except (DataError, ValueError, ImportError) as exc:
        print(f"rift-losses {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (
        OSError
    ) as exc:  # an I/O failure not tied to a row (a disk error while reading, say): a message, never a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"rift-losses {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rift-losses {args.command}: interrupted; no output written", file=sys.stderr)
        return 130
    except _Signalled as exc:
        print(
            f"rift-losses {args.command}: stopped by {signal.Signals(exc.signum).name}; no output written",
            file=sys.stderr,
        )
        return 128 + exc.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    try:
        if args.json:
            print(json.dumps(summary, indent=2))
        elif args.command == "stats":
            print(commands.format_stats(summary))
            if "mean_at_k" in summary:
                from .at_k import format_at_k

                print(format_at_k({**summary, "samples": summary["responses"]}))
        else:
            _print_summary(summary)
        sys.stdout.flush()
    except BrokenPipeError:  # `rift-losses stats f.jsonl | head -4`: the reader has what it wanted
        _silence_stdout()
    warning = None if args.command == "join" else untrainable_warning(args.command, summary)
    if warning:
        print(warning, file=sys.stderr)
    return 0


def _silence_stdout() -> None:
    """After a broken pipe on stdout: point it at /dev/null so that the exit-time flush stays quiet."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
