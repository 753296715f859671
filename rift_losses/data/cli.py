"""``rift-losses``: from sampled responses to a RIFT buffer (label, normalize, stats, convert).

    rift-losses label rollouts.jsonl -o labelled.jsonl            # math-verify, +1.0 / -0.2
    rift-losses stats labelled.jsonl                              # the paper's Table 1 and Table 4
    rift-losses normalize labelled.jsonl -o norm.jsonl --method gaussian   # eq. 6-8 (optional)
    rift-losses convert labelled.jsonl -o data/buffer.jsonl --to llamafactory   # or --to swift

Exit status: 0 on success, 1 on bad input (the message names file:line and the field), 2 on a
bad command line.
"""

from __future__ import annotations

import argparse
import json
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


def build_parser() -> argparse.ArgumentParser:
    from rift_losses import NORMALIZATIONS

    from .commands import HOSTS

    common = argparse.ArgumentParser(add_help=False)
    f = common.add_argument_group("field names (input rows: chat 'messages', or 'prompt' and 'response')")
    f.add_argument("--messages-field", default="messages", metavar="NAME", help="chat messages, the sampled response last (default: %(default)s)")
    f.add_argument("--prompt-field", default="prompt", metavar="NAME", help="prompt text of prompt/response rows (default: %(default)s)")
    f.add_argument("--response-field", default="response", metavar="NAME", help="sampled response of prompt/response rows (default: %(default)s)")
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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("label", parents=[common], help="grade responses with math-verify and write the paper's constant rewards")
    p.add_argument("input", help="JSONL of sampled responses with reference answers ('-': stdin)")
    p.add_argument("-o", "--output", required=True, help="labelled JSONL (written to a temporary file, then renamed)")
    p.add_argument("--answer-field", default="answer", metavar="NAME", help="the reference answer (default: %(default)s)")
    p.add_argument("--positive", type=float, default=1.0, help="reward of a correct response (default: %(default)s, the paper's)")
    p.add_argument("--negative", type=float, default=-0.2, help="reward of a wrong one, no answer included (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=1, help="grading processes (math-verify: about 1 ms a response; default: %(default)s)")

    p = sub.add_parser("normalize", parents=[common, grouping], help="normalize rewards within each problem's responses (eq. 6-8)")
    p.add_argument("input", help="labelled JSONL; each problem's rows next to each other ('-': stdin)")
    p.add_argument("-o", "--output", required=True, help="JSONL with normalized rewards")
    p.add_argument("--method", required=True, choices=tuple(NORMALIZATIONS), help="gaussian: eq. 6, gpg_mean: eq. 7, gpg_scaled: eq. 8")
    p.add_argument("--raw-field", default="raw_reward", metavar="NAME", help="keeps each reward before normalization (default: %(default)s)")

    p = sub.add_parser("stats", parents=[common, grouping], help="the paper's Table 1 and Table 4 for a buffer")
    p.add_argument("input", help="labelled JSONL ('-': stdin)")

    p = sub.add_parser("convert", parents=[common, grouping], help="write a labelled buffer in MS-Swift's or LLaMA-Factory's layout")
    p.add_argument("input", help="labelled JSONL ('-': stdin)")
    p.add_argument("-o", "--output", required=True, help="the host's JSONL")
    p.add_argument("--to", required=True, choices=HOSTS, help="the host")
    p.add_argument("--dataset-name", default=None, help="llamafactory: the dataset_info.json entry (default: the output's file name without extension)")
    p.add_argument("--dataset-info", default=None, help="llamafactory: the dataset_info.json to add the entry to (default: beside the output)")
    return parser


def _signed(x: float) -> str:
    return f"+{x!r}" if x > 0 else repr(x)


def _print_summary(s: dict) -> None:
    cmd = s["command"]
    if cmd == "label":
        print(f"label: {s['rows']:,} responses graded by math-verify -> {s['output']}")
        print(f"  correct {s['correct']:>9,}   reward {_signed(s['positive_reward'])}")
        note = ""
        if s["no_answer"]:
            lines = ", ".join(map(str, s["no_answer_lines"])) + (", ..." if s["no_answer"] > len(s["no_answer_lines"]) else "")
            note = f"   ({s['no_answer']:,} with no extractable answer, counted wrong: line {lines})"
        print(f"  wrong   {s['wrong']:>9,}   reward {_signed(s['negative_reward'])}{note}")
        if s["replaced_rewards"]:
            print(f"  replaced an existing reward on {s['replaced_rewards']:,} rows")
    elif cmd == "normalize":
        print(f"normalize ({s['method']}): {s['rows']:,} rows in {s['groups']:,} groups (by {s['grouped_by']}) -> {s['output']}")
        print(f"  after: {s['positive']:,} positive, {s['negative']:,} negative, {s['zero']:,} zero")
        if s["flat_groups"]:
            print(f"  {s['flat_groups']:,} groups have all-equal rewards (no relative signal)")
    elif cmd == "convert":
        print(f"convert --to {s['to']}: {s['rows']:,} rows in {s['groups']:,} groups -> {s['output']}")
        if "dataset_info" in s:
            verb = "replaced" if s["replaced_entry"] else "added"
            print(f"  {verb} dataset {s['dataset_name']!r} in {s['dataset_info']} (columns: messages, reward, group)")
        if s["not_written"]:
            dropped = ", ".join(f"{k} ({v:,} rows)" for k, v in s["not_written"].items())
            print(f"  not written (the host does not read them): {dropped}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rift-losses`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from . import commands
    from ._io import DataError

    fields = _fields(args)
    common = {"fields": fields, "progress": args.progress}
    try:
        if args.command == "label":
            summary = commands.label(
                args.input, args.output, positive=args.positive, negative=args.negative, jobs=args.jobs, **common
            )
        elif args.command == "normalize":
            summary = commands.normalize(args.input, args.output, method=args.method, raw_field=args.raw_field, **common)
        elif args.command == "stats":
            summary = commands.stats(args.input, **common)
        else:
            summary = commands.convert(
                args.input, args.output, to=args.to, dataset_name=args.dataset_name, dataset_info=args.dataset_info, **common
            )
    except (DataError, ValueError, ImportError) as exc:
        print(f"rift-losses {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rift-losses {args.command}: interrupted; no output written", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(summary, indent=2))
    elif args.command == "stats":
        print(commands.format_stats(summary))
    else:
        _print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
