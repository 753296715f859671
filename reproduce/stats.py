"""The statistics of `make reproduce`: intervals over seeds, paired differences, a paired bootstrap.

Pure functions over plain lists (no torch, no host). Notation: S seeds, P held-out problems.

- :func:`t_interval`: mean and 95% Student-t interval of S values,
  ``mean ± t_{0.975, S-1} * sd / sqrt(S)`` (``None`` bounds when S < 2).
- :func:`paired_by_seed`: the per-seed differences ``a_s - b_s`` of two methods evaluated on the
  same problems with the same sampling seed, and their t-interval.
- :func:`paired_bootstrap`: the difference of two methods' scores averaged over seeds, resampling
  the P held-out problems with replacement (the same resample for both methods, so the pairing by
  problem is kept); the 2.5 and 97.5 percentiles of B resampled means.
- :func:`per_problem`: each problem's share of correct samples (mean@k's summand) and pass@k
  summand, read from a labelled evaluation file (``{"messages": [...], "reward": r}`` rows;
  correct when r > 0; a problem is its prompt).

A difference is "distinguishable from zero" when its 95% interval excludes 0.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

#: two-sided 95% quantiles of Student's t, t_{0.975, df}, df = 1..30 (scipy.stats.t.ppf(0.975, df))
T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
Z975 = 1.960


def t_interval(values: list[float]) -> dict:
    """Mean, sample sd and the 95% t-interval of ``values`` (S of them).

    Formula: ``mean ± t_{0.975, S-1} * sd / sqrt(S)``; with S < 2 the sd is 0 and the bounds are None.
    """
    if not values:
        raise ValueError(f"values must hold at least one number, got {values!r}")
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "sd": 0.0, "ci95": [None, None], "n": n}
    sd = statistics.stdev(values)
    t = T975[n - 2] if n - 1 <= len(T975) else Z975
    half = t * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half], "n": n}


def excludes_zero(ci: list) -> bool | None:
    """True when the interval lies strictly on one side of 0; None when it is undefined."""
    lo, hi = ci
    if lo is None or hi is None:
        return None
    return lo > 0 or hi < 0


def paired_by_seed(a: list[float], b: list[float]) -> dict:
    """The per-seed differences ``a[s] - b[s]`` and their mean with its 95% t-interval."""
    if len(a) != len(b) or not a:
        raise ValueError(f"a and b must hold one value per seed each, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    out = t_interval(diffs)
    out["per_seed"] = diffs
    out["distinguishable_from_zero"] = excludes_zero(out["ci95"])
    return out


def paired_bootstrap(a: list[list[float]], b: list[list[float]], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap over problems of ``mean(a) - mean(b)``.

    ``a[s][p]`` and ``b[s][p]`` are the per-problem scores of seed s on problem p (the same problems in
    the same order). Each method's score of problem p is its mean over seeds; one resample draws P
    problems with replacement and takes the mean difference over them.

    Reference: ``d = [mean(a[s][p] for s) - mean(b[s][p] for s) for p]``;
    ``boot = [mean(choices(d, k=P)) for _ in range(B)]``; interval = percentiles 2.5 and 97.5 of boot.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"a and b must hold the same number of seeds (>= 1), got {len(a)} and {len(b)}")
    n_problems = len(a[0])
    if n_problems == 0 or any(len(row) != n_problems for row in (*a, *b)):
        raise ValueError(f"every seed must score the same problems, got lengths {[len(r) for r in (*a, *b)]}")
    d = [statistics.fmean(s[p] for s in a) - statistics.fmean(s[p] for s in b) for p in range(n_problems)]
    rng = random.Random(seed)
    boot = sorted(statistics.fmean(rng.choices(d, k=n_problems)) for _ in range(n_boot))
    lo, hi = boot[int(0.025 * (n_boot - 1))], boot[int(math.ceil(0.975 * (n_boot - 1)))]
    return {
        "mean": statistics.fmean(d),
        "ci95": [lo, hi],
        "problems": n_problems,
        "resamples": n_boot,
        "distinguishable_from_zero": excludes_zero([lo, hi]),
    }


def per_problem(path: Path, *, k: int) -> dict[str, list[float]]:
    """Per problem (in first-appearance order) its share of correct samples and its pass@k summand.

    Written independently of ``rift_losses.data.at_k`` (grouping by the user message, the unbiased
    pass@k ``1 - C(n - c, k) / C(n, k)``), so that comparing the two checks both.
    """
    counts: dict[str, list[int]] = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get("reward"), (int, float)):
                raise ValueError(f"{path}:{line_no}: reward must be a number, got {row.get('reward')!r}")
            prompt = json.dumps([m for m in row["messages"] if m["role"] != "assistant"], sort_keys=True)
            entry = counts.setdefault(prompt, [0, 0])
            entry[0] += 1
            entry[1] += row["reward"] > 0
    mean, passk = [], []
    for n, c in counts.values():
        if n < k:
            raise ValueError(f"{path}: every problem must have at least k={k} samples, got {n}")
        mean.append(c / n)
        passk.append(1.0 - (math.comb(n - c, k) / math.comb(n, k) if n - c >= k else 0.0))
    return {"mean_at_k": mean, "pass_at_k": passk}


def validity_gate(rft: list[float], base: list[float]) -> dict:
    """The gate, fixed in advance: RFT's mean@k above the base's by more than the seed spread.

    Rule: ``mean(rft) - mean(base) > max(sd(rft), sd(base))`` over the seeds (sample sd), with at
    least 2 seeds; with fewer it cannot be assessed and does not hold.
    """
    diff = statistics.fmean(rft) - statistics.fmean(base)
    if len(rft) < 2:
        return {
            "holds": False,
            "assessable": False,
            "rft_minus_base": diff,
            "seed_spread": None,
            "rule": "mean(rft) - mean(base) > max(sd(rft), sd(base)) over >= 2 seeds",
        }
    spread = max(statistics.stdev(rft), statistics.stdev(base))
    return {
        "holds": diff > spread,
        "assessable": True,
        "rft_minus_base": diff,
        "seed_spread": spread,
        "rule": "mean(rft) - mean(base) > max(sd(rft), sd(base)) over >= 2 seeds",
    }
