"""``make bench-methods`` (benchmarks/method_memory.py): the commands and data it measures, without running them.

The measurement itself takes minutes and about 20 GB (it is not part of ``make test``); what can rot
cheaply is checked here: DPO goes through ``swift rlhf --rlhf_type dpo`` on the pairs file with the
same options as the ``swift sft`` runs, and each pair's rejected response has the chosen one's length.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import hosts  # noqa: E402
import method_memory  # noqa: E402


def _job(tmp_path, mode):
    return hosts.Job(
        mode=mode, model=tmp_path / "m", data=tmp_path / "d", out=tmp_path / mode, batch=1, max_length=2176,
        steps=1, bf16=False,
    )  # fmt: skip


def test_dpo_runs_swift_rlhf_on_pairs_with_the_sft_options(tmp_path):
    cli = ["/venv/bin/swift"]
    sft = method_memory._swift_method(_job(tmp_path, "plain"), cli)
    rift = method_memory._swift_method(_job(tmp_path, "rift"), cli)
    dpo = method_memory._swift_method(_job(tmp_path, "dpo"), cli)
    assert sft[:2] == ["/venv/bin/swift", "sft"] and rift[-2:] == ["--loss_type", "rift"]
    assert dpo[:4] == ["/venv/bin/swift", "rlhf", "--rlhf_type", "dpo"]
    assert dpo[dpo.index("--dataset") + 1] == str(tmp_path / "d" / "pairs.jsonl")
    # everything else (batch, length, steps, checkpointing, dtype) is the SFT run's
    strip = lambda cmd: [a for a in cmd if a not in ("rlhf", "--rlhf_type", "dpo", "sft") and "jsonl" not in a]  # noqa: E731
    assert strip(dpo) == [a if a != str(tmp_path / "plain") else str(tmp_path / "dpo") for a in strip(sft)]


def test_pairs_reject_a_response_of_the_same_length(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "0 1 2"}, {"role": "assistant", "content": "3 4 5 9 0"}]},
        {"messages": [{"role": "user", "content": "7"}, {"role": "assistant", "content": "8 9"}]},
    ]
    (tmp_path / "plain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = [json.loads(line) for line in method_memory.write_pairs(tmp_path).read_text().splitlines()]
    assert [p["rejected_response"] for p in pairs] == ["4 5 6 0 1", "9 0"]
    assert [p["messages"] for p in pairs] == [r["messages"] for r in rows]
