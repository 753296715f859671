"""mean@k and pass@k of a labelled set of samples of an evaluation set (``rift-losses stats --k K``).

For problem i with n_i samples, c_i of them correct (reward > 0):

    mean@k = mean_i  c_i / n_i                                    (expected share of correct samples)
    pass@k = mean_i  1 - C(n_i - c_i, k) / C(n_i, k)               (Chen et al. 2021, unbiased for n_i >= k)

With n_i = k, pass@k is the share of problems with at least one correct sample. Reference:
``pass@k = mean([1 - comb(n - c, k) / comb(n, k) for n, c in problems])``.
"""

from __future__ import annotations

from math import comb
from typing import Any

from ._io import DataError, Progress, file_size, read_jsonl
from ._rows import Fields, Grouper, conversation, reward


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one problem: ``1 - C(n - c, k) / C(n, k)``.

    Raises ``ValueError`` unless ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if not 0 <= c <= n:
        raise ValueError(f"c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}] (the samples of the problem), got {k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def at_k(src, *, k: int, fields: Fields = Fields(), progress: str = "none") -> dict[str, Any]:  # noqa: B008 (a frozen dataclass)
    """mean@k and pass@k over the problems of a labelled file (a sample is correct when its reward > 0).

    Problems are grouped as ``stats`` groups them (the group field, else the prompt). Every
    problem must have at least ``k`` samples.

    Returns:
        A dict: k, mean_at_k, pass_at_k (fractions in [0, 1]), problems, samples.

    Raises:
        ValueError: ``k`` is not an integer >= 1, or a problem has fewer than ``k`` samples
            (a :class:`DataError` naming the problem's first line).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    name = str(src)
    grouper = Grouper(fields, name)
    counts: dict[int, list] = {}  # digest -> [samples, correct, first line, description]
    prog = Progress("stats", file_size(src), mode=progress)
    try:
        for line, row in read_jsonl(src, prog):
            conv = conversation(row, fields, name, line)
            r = reward(row, fields, name, line)
            key, what = grouper.key(row, conv, line)
            entry = counts.setdefault(key, [0, 0, line, what])
            entry[0] += 1
            entry[1] += r > 0
    finally:
        prog.close()
    if not counts:
        raise ValueError(f"{name} must hold at least one labelled sample for mean@{k} and pass@{k}, got none")
    mean = passk = 0.0
    for n, c, line, what in counts.values():
        if n < k:
            raise DataError(name, line, f"{what} must have at least k={k} samples for pass@{k}, got {n}")
        mean += c / n
        passk += pass_at_k(n, c, k)
    problems = len(counts)
    return {
        "k": k,
        "mean_at_k": mean / problems,
        "pass_at_k": passk / problems,
        "problems": problems,
        "samples": sum(v[0] for v in counts.values()),
    }


def format_at_k(s: dict[str, Any]) -> str:
    k = s["k"]
    return (
        f"  mean@{k} {100 * s['mean_at_k']:5.1f}%   pass@{k} {100 * s['pass_at_k']:5.1f}%   "
        f"({s['samples']:,} samples of {s['problems']:,} problems; correct: reward > 0; pass@{k} unbiased when n > {k})"
    )
