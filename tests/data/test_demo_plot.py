"""The demo's own checks (demo/plot.py): what `make demo` asserts about its curves and its PNG.

`make demo` itself runs in CI (.ci/run) and fails unless these checks pass on its real runs;
here they are tested on synthetic logs, including logs that must make them fail.
"""

from __future__ import annotations

import math
import sys

import pytest

from datahelpers import REPO

sys.path.insert(0, str(REPO / "demo"))
import plot  # noqa: E402


def _runs(*, naive_runs_away=True, rift_negative=False, steps=120):
    rift, naive, lf, trl = [], [], [], []
    for s in range(1, steps + 1):
        pos = 4 * math.exp(-s / 30) + 0.2
        neg_rift = 0.2 * 0.3
        neg_naive = -0.3 - 0.05 * max(0, s - 40) if naive_runs_away else -0.1
        rift.append(
            {
                "step": s,
                "loss": pos + neg_rift - (2.0 if rift_negative and s == 77 else 0),
                "pos": pos,
                "neg": neg_rift,
                "neg_prob": 0.3,
                "grad_norm": 0.6,
            }
        )
        naive.append(
            {
                "step": s,
                "loss": pos + neg_naive,
                "pos": pos,
                "neg": neg_naive,
                "neg_prob": 0.3,
                "grad_norm": 0.6 * (1 + (s / 10 if naive_runs_away else 0)),
            }
        )
        lf.append({"step": s, "loss": pos * 1.02 + neg_rift, "pos": pos * 1.02, "neg": neg_rift, "neg_prob": 0.3})
        trl.append({"step": s, "loss": pos * 0.98 + neg_rift, "pos": pos * 0.98, "neg": neg_rift, "neg_prob": 0.3})
    return {"rift": rift, "naive": naive, "rift_lf": lf, "rift_trl": trl}


def test_check_states_what_the_picture_shows():
    facts = plot.check(_runs())
    assert facts[0].startswith("RIFT (MS-Swift): loss >= 0 at every one of 120 steps")
    assert facts[1].startswith("RIFT (LLaMA-Factory): loss >= 0")
    assert facts[2].startswith("RIFT (TRL): loss >= 0")
    assert facts[3].startswith("gradient norm over the last 12 steps (median): naive")
    assert facts[4].startswith("naive: below zero from step ")


def test_check_fails_when_the_naive_loss_does_not_run_away():
    with pytest.raises(AssertionError, match="the naive loss must end below zero"):
        plot.check(_runs(naive_runs_away=False))


def test_check_fails_when_rift_goes_below_zero():
    with pytest.raises(AssertionError, match="RIFT's loss must stay >= 0, got"):
        plot.check(_runs(rift_negative=True))
    runs = _runs()
    runs["rift_trl"][5]["loss"] = -0.5
    with pytest.raises(AssertionError, match=r"RIFT's loss \(TRL\) must stay >= 0, got -0.5000"):
        plot.check(runs)


def test_plot_writes_a_non_trivial_png(tmp_path):
    png = plot.plot(_runs(), tmp_path / "out" / "rift_vs_naive.png", title="test", lr=1e-2, batch=16)
    assert "1860x540 px" in plot.check_png(png)
    blank = tmp_path / "blank.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 4), dpi=100)
    fig.savefig(blank)
    plt.close(fig)
    with pytest.raises(AssertionError, match="must be at least 20000 bytes|looks blank"):
        plot.check_png(blank)
    with pytest.raises(AssertionError, match="was not written"):
        plot.check_png(tmp_path / "missing.png")
