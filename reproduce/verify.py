"""Recompute every mean@k and pass@k of a `make reproduce` results.json from its kept evaluation files.

    python reproduce/verify.py reproduce_out/results.json      # exit 1 and the differences if any

Each ``per_seed`` entry of every method group names its labelled evaluation file (``eval_file``,
relative to the repository root); ``eval_files`` lists them per method in ``per_seed`` order.
The scores are recomputed with :func:`stats.per_problem` (written apart from ``rift-losses stats``)
and must equal the stored ones; every method's mean must be the mean of its seeds.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import stats  # noqa: E402

GROUPS = ("methods", "methods_shared_lr", "methods_fifth_rft_lr")
TOL = 1e-9


def verify(results: dict, root: Path) -> list[str]:
    """Differences between results.json and its evaluation files under ``root`` (empty when they agree)."""
    k = results["k"]
    problems = []
    for group in GROUPS:
        for name, m in results.get(group, {}).items():
            for key in ("mean_at_k", "pass_at_k"):
                mean = statistics.fmean(r[key] for r in m["per_seed"])
                if abs(mean - m[key]) > TOL:
                    problems.append(f"{group}.{name}.{key} must be the mean of its seeds {mean!r}, got {m[key]!r}")
            for r in m["per_seed"]:
                path = root / r["eval_file"]
                if not path.is_file():
                    problems.append(f"{group}.{name} seed {r['seed']}: eval_file {path} must exist")
                    continue
                scores = stats.per_problem(path, k=k)
                for key in ("mean_at_k", "pass_at_k"):
                    value = statistics.fmean(scores[key])
                    if abs(value - r[key]) > TOL:
                        problems.append(
                            f"{group}.{name} seed {r['seed']}: {key} recomputed from {r['eval_file']} is "
                            f"{value!r}, results.json says {r[key]!r}"
                        )
    for name, files in results.get("eval_files", {}).items():
        listed = [r["eval_file"] for r in results["methods"][name]["per_seed"]]
        if files != listed:
            problems.append(f"eval_files.{name} must be {listed!r} (per_seed order), got {files!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python reproduce/verify.py RESULTS_JSON")
    path = Path(argv[0])
    results = json.loads(path.read_text())
    bad = verify(results, HERE.parent)
    n = sum(len(m["per_seed"]) for g in GROUPS for m in results.get(g, {}).values())
    if bad:
        print("\n".join(bad))
        print(f"verify: {len(bad)} difference(s) between {path} and its evaluation files")
        return 1
    print(f"verify: {path}: {n} mean@{results['k']}/pass@{results['k']} values recomputed from their files, all equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
