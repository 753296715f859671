"""The paper's DPO pairs from a labelled buffer, for `swift rlhf --rlhf_type dpo`.

    python reproduce/dpo_pairs.py round1/labelled.jsonl --problems math_train.jsonl -o round1/pairs.jsonl

Each labelled sample is paired with its problem's reference solution (the last assistant message of
the problem row), preferring the sample when it is correct (reward > 0) and the reference otherwise
(the paper's section 4.1). Writes MS-Swift's preference rows
``{"messages": [..., assistant=chosen], "rejected_response": rejected}``; `make reproduce` builds its
DPO arm with the same function (reproduce/run.py, ``dpo_pairs``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import dpo_pairs, read_jsonl  # noqa: E402
from task import write_jsonl  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labelled", type=Path, help="`rift-losses label` output (rows with messages and reward)")
    parser.add_argument("--problems", type=Path, required=True, help="problem rows with the reference solution")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        pairs = dpo_pairs(read_jsonl(args.labelled), read_jsonl(args.problems), source=str(args.labelled))
    except ValueError as err:
        raise SystemExit(f"dpo_pairs: {err}") from None
    write_jsonl(args.output, pairs)
    print(f"dpo_pairs: {len(pairs)} pairs -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
