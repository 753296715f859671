"""The paper's Table 7 on CPU: peak memory of one training step per method, each through its real command.

Run: ``make bench-methods`` (``BENCH_ARGS="--response-tokens 1984"`` by default; about 20 GB of free
memory at that length; ``--response-tokens 960`` halves it).

One backbone for every method: a tiny Qwen2 (hidden 32, 2 layers) with the Qwen2.5 vocabulary
(V = 151936), float32, gradient checkpointing, one optimizer step of one row of
``prompt + response`` tokens (64 + 1984 = 2048 by default), all through MS-Swift 4.6:

- ``baseline``: ``swift sft`` on one short row (the loaded model, optimizer and framework);
- ``RFT / SFT``: ``swift sft`` (MS-Swift's cross-entropy) on the row: RFT and SFT run the same step;
- ``RIFT``: ``swift sft --loss_type rift`` on the row with its reward;
- ``DPO``: ``swift rlhf --rlhf_type dpo`` on one pair (the row's response as chosen, a response of the
  same length as rejected): the policy forwards both, and the reference model (a second copy,
  MS-Swift's default for full fine-tuning) forwards both without gradients.

The batch is one example per method, as the paper's one global batch size: one row for RFT/SFT and
RIFT, one pair (two sequences) for DPO. Peak memory is the training process's peak RSS
(``ru_maxrss``, benchmarks/hosts.py; glibc's mmap threshold at 64 KiB so that freed tensors leave the
resident set), reported above the baseline's and as a ratio to RFT's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hosts  # noqa: E402
from host_memory import TINY_WIDE  # noqa: E402

#: label -> Job mode (the order of the table)
RUNS = (("baseline", "baseline"), ("RFT / SFT", "plain"), ("RIFT", "rift"), ("DPO", "dpo"))


def _swift_method(job: hosts.Job, cli: list[str]) -> list[str]:
    """MS-Swift's command for ``job``: benchmarks/hosts.py's `swift sft`, or `swift rlhf --rlhf_type dpo` on pairs.

    ``cli`` is the argv that starts MS-Swift's console script (hosts.Runtime.cli).
    """
    if job.mode != "dpo":
        return hosts._swift(job, cli)
    cmd = hosts._swift(hosts.Job(**{**job.__dict__, "mode": "plain"}), cli)
    cmd[len(cli) : len(cli) + 1] = ["rlhf", "--rlhf_type", "dpo"]
    cmd[cmd.index("--dataset") + 1] = str(job.data / "pairs.jsonl")
    return cmd


SWIFT = dataclasses.replace(hosts.HOSTS["ms-swift"], command=_swift_method)


def write_pairs(data: Path) -> Path:
    """``pairs.jsonl`` from ``plain.jsonl``: the response is chosen; rejected is the same response with every
    digit shifted by one (the same number of tokens with the tiny tokenizer: one token per digit)."""
    shift = str.maketrans("0123456789", "1234567890")
    rows = [json.loads(line) for line in (data / "plain.jsonl").read_text().splitlines() if line.strip()]
    with open(data / "pairs.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({**row, "rejected_response": row["messages"][-1]["content"].translate(shift)}) + "\n")
    return data / "pairs.jsonl"


def measure(work: Path, *, rows: int, prompt_tokens: int, response_tokens: int) -> dict:
    model = hosts.build_model(work / "model", TINY_WIDE)
    data = hosts.write_host_data(
        SWIFT, work / "data", model, rows=rows, prompt_tokens=prompt_tokens, response_tokens=response_tokens
    )
    write_pairs(data)
    results = {}
    for label, mode in RUNS:
        job = hosts.Job(
            mode=mode,
            model=model,
            data=data,
            out=work / label.replace(" / ", "-").replace(" ", "_"),
            batch=rows,
            max_length=prompt_tokens + response_tokens + 128,
            steps=1,
            bf16=False,
        )
        r = hosts.run(SWIFT, job)
        results[label] = {"peak_rss_bytes": r["maxrss_bytes"], "step": r["steps"][0]}
        print(
            f"  {label:<10} peak RSS {r['maxrss_bytes'] / 1e9:6.2f} GB  batch {r['steps'][0].get('input_shape')}",
            flush=True,
        )
    return results


def table(results: dict) -> str:
    base = results["baseline"]["peak_rss_bytes"]
    rft = results["RFT / SFT"]["peak_rss_bytes"]
    lines = [
        "| method | command | peak RSS GB | above the loaded model GB | peak / RFT's | above-model / RFT's |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    commands = {
        "baseline": "`swift sft`, one short row",
        "RFT / SFT": "`swift sft`",
        "RIFT": "`swift sft --loss_type rift`",
        "DPO": "`swift rlhf --rlhf_type dpo` (policy + reference)",
    }
    for label, r in results.items():
        peak = r["peak_rss_bytes"]
        ratio = "-" if label == "baseline" else f"{peak / rft:.2f}"
        above = "-" if label == "baseline" else f"{(peak - base) / (rft - base):.2f}"
        lines.append(
            f"| {label} | {commands[label]} | {peak / 1e9:.2f} | {(peak - base) / 1e9:.2f} | {ratio} | {above} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1, help="examples per step (rows; pairs for DPO)")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--response-tokens", type=int, default=1984)
    p.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the measurements to this file")
    args = p.parse_args(argv)
    for name in ("rows", "prompt_tokens", "response_tokens"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    import torch
    from bench_logprobs import load_line, machine_line

    print(
        "rift-losses: Table 7 on CPU, peak RSS of one training step per method through MS-Swift "
        f"(float32, V = 151936, {args.rows} x ({args.prompt_tokens} + {args.response_tokens}) tokens)"
    )
    print(
        f"machine: {machine_line(torch.device('cpu'))}; total memory "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; load before {load_line()}"
    )
    with tempfile.TemporaryDirectory(prefix="rift-bench-methods-") as tmp:
        results = measure(
            Path(args.work or tmp),
            rows=args.rows,
            prompt_tokens=args.prompt_tokens,
            response_tokens=args.response_tokens,
        )
    print(f"load after {load_line()}\n")
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
